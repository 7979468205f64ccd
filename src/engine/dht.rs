//! The Dht actor: finds peers through the mainline DHT (BEP 5) and announces us there.
