//! The web page's stream controls, driven in headless Chromium: a file's "open stream"
//! link reads the right bytes with the page's login, its "copy link" button gives a
//! signed link that a player without the key can read, and the piece map counts a
//! stream while its read waits and stops counting it as soon as the reader goes.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::{browser_tools, is_complete, open_tab, screenshot, wait_for_row, UI_LIMIT};
use crate::support::{
    http, make_torrent, with_announce, Browser, Daemon, DaemonOpts, LtSeeder, Payload, SeedOpts,
    Tracker,
};

/// How long the seeded torrent may take to download from a loopback seeder.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(120);

/// Reads `bytes=start-last` of `url` from the page (with its login cookie): the
/// status and the bytes.
const RANGE_SCRIPT: &str = r#"
return (async () => {
  const r = await fetch(arguments[0], {headers: {Range: `bytes=${arguments[1]}-${arguments[2]}`}});
  return {status: r.status, bytes: Array.from(new Uint8Array(await r.arrayBuffer()))};
})();
"#;

/// Opens the detail view of torrent `id` on its files tab, and waits for file 0's row.
fn open_files(browser: &Browser, id: &str) {
    browser.click_css(&format!("#torrent-rows tr[data-id=\"{id}\"]"), UI_LIMIT);
    browser.wait_for("#detail", UI_LIMIT);
    open_tab(browser, "files");
    browser.wait_for(
        "#files-table tbody tr[data-index=\"0\"] a.open-stream",
        UI_LIMIT,
    );
}

#[test]
fn web_page_stream_controls_open_copy_and_show_each_streams_window() {
    const TEST: &str = "web_page_stream_controls_open_copy_and_show_each_streams_window";
    let Some(tools) = browser_tools(TEST) else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("ta-browser-stream-")
        .tempdir()
        .expect("temp folder for the stream controls test");
    // A clip a seeder has, and a film nobody has (its torrent names no tracker).
    let clip = Payload::single(&tmp.path().join("seed"), "clip.mp3", 700_000);
    let data = fs::read(clip.dir.join("clip.mp3")).unwrap();
    let bare = tmp.path().join("clip.bare.torrent");
    let hash = make_torrent(&clip.root(), &bare, 15, &[]);
    let tracker = Tracker::start(&[hash]);
    let clip_torrent = tmp.path().join("clip.torrent");
    with_announce(&bare, &clip_torrent, &tracker.http_url());
    let _seeder = LtSeeder::start(&clip_torrent, &clip.dir, SeedOpts::default());
    let film = Payload::single(&tmp.path().join("nobody"), "film.mkv", 2 << 20);
    let film_torrent = tmp.path().join("film.torrent");
    make_torrent(&film.root(), &film_torrent, 15, &[]);

    let key = "a-key-long-enough-for-the-daemon";
    let daemon = Daemon::start_keyed(tmp.path(), key, DaemonOpts::default());
    let clip_id = daemon.add_torrent_file(&clip_torrent);
    let film_id = daemon.add_torrent_file(&film_torrent);

    let browser = Browser::start(&tools, 1280, 900);
    browser.goto(&format!("{}/", daemon.base()));
    let key_box = browser.wait_for("#login-key", UI_LIMIT);
    browser.send_keys(&key_box, key);
    browser.click_css("#login-submit", UI_LIMIT);
    wait_for_row(&browser, &clip_id, "complete", DOWNLOAD_LIMIT, is_complete);

    // "open stream": the file's stream route, readable with the page's login.
    open_files(&browser, &clip_id);
    let link = browser.find("#files-table tbody tr[data-index=\"0\"] a.open-stream");
    let href = browser.attribute(&link, "href").expect("an href");
    assert!(
        href.ends_with(&format!("/api/torrents/{clip_id}/files/0/stream")),
        "{href}"
    );
    let (start, last) = (400_000usize, 400_099usize);
    let read = browser.execute(RANGE_SCRIPT, &[json!(href), json!(start), json!(last)]);
    assert_eq!(read["status"], 206, "{read}");
    let bytes: Vec<u8> = serde_json::from_value(read["bytes"].clone()).unwrap();
    assert!(
        bytes == data[start..=last],
        "the open-stream link read other bytes"
    );

    // "copy link": a signed link, read here without the key.
    browser.execute(
        "Object.defineProperty(navigator, 'clipboard', {configurable: true, \
         value: {writeText: async (t) => { window.copiedLink = t; }}}); return true;",
        &[],
    );
    browser.click_css(
        "#files-table tbody tr[data-index=\"0\"] button.copy-stream",
        UI_LIMIT,
    );
    let copied = browser.wait_for_script(
        "a copied stream link",
        UI_LIMIT,
        "return window.copiedLink || null;",
        &[],
    );
    let copied = copied.as_str().unwrap().to_string();
    let path = &copied[copied.find("/api/").expect("a path in the link")..];
    assert!(path.contains("sig="), "{copied}");
    let reply = http(daemon.port, "GET", path, &[("Range", "bytes=0-99")], None);
    assert_eq!(reply.status, 206, "{reply:?}");
    assert!(
        reply.body == data[..100],
        "the copied link read other bytes"
    );
    let reply = http(
        daemon.port,
        "GET",
        &format!("/api/torrents/{clip_id}/files/0/stream"),
        &[("Range", "bytes=0-99")],
        None,
    );
    assert_eq!(reply.status, 401, "without the signature: {reply:?}");

    // A read of the film waits (nobody has it): the piece map counts its stream, and
    // stops counting it as soon as the page gives up the read, long before the read's
    // own wait would end.
    browser.click_css("#detail-close", UI_LIMIT);
    browser.wait_until("the detail view closed", UI_LIMIT, |b| {
        b.try_find("#detail")
            .is_none_or(|d| !b.displayed(&d).unwrap_or(false))
            .then_some(())
    });
    open_files(&browser, &film_id);
    let film_href = browser
        .attribute(
            &browser.find("#files-table tbody tr[data-index=\"0\"] a.open-stream"),
            "href",
        )
        .expect("an href");
    browser.execute(
        "window.readStop = new AbortController(); \
         fetch(arguments[0], {headers: {Range: 'bytes=1000000-1000099'}, signal: window.readStop.signal}) \
           .then((r) => r.arrayBuffer()).catch(() => null); return true;",
        &[json!(film_href)],
    );
    open_tab(&browser, "pieces");
    let streams = |b: &Browser| -> Value {
        b.execute(
            "return document.querySelector('#pieces-streams').textContent;",
            &[],
        )
    };
    browser.wait_until("the waiting read's stream in the map", UI_LIMIT, |b| {
        (streams(b) == "1").then_some(())
    });
    screenshot(&browser, "stream-window");
    browser.execute("window.readStop.abort(); return true;", &[]);
    let aborted = Instant::now();
    browser.wait_until("the stream gone from the map", UI_LIMIT, |b| {
        (streams(b) == "0").then_some(())
    });
    assert!(
        aborted.elapsed() < Duration::from_secs(10),
        "the stream stayed {:?} after its reader went",
        aborted.elapsed()
    );
}
