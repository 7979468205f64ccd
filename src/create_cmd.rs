//! `torrent-actors create`: the command-line front end of `torrent_actors::create`. It scans
//! the path, draws a progress bar on stderr (when it is a terminal) while the library
//! hashes, writes the `.torrent` and prints what it made. No hashing logic lives here.

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use torrent_actors::create::{self, CreateError, CreateOptions, Format};

use crate::cli::CreateCmd;
use crate::{exit, Failure};

/// Runs `create`.
pub fn run(cmd: CreateCmd) -> Result<(), Failure> {
    let format = if cmd.v1 {
        Format::V1
    } else if cmd.v2 {
        Format::V2
    } else {
        Format::Hybrid
    };
    let source = create::scan(&cmd.path).map_err(failure)?;
    let total = source.total_length();
    let options = CreateOptions {
        format,
        piece_size: cmd.piece_size,
        trackers: cmd.trackers,
        web_seeds: cmd.web_seeds,
        private: cmd.private,
        comment: cmd.comment,
        created_by: Some(format!("torrent-actors {}", env!("CARGO_PKG_VERSION"))),
        creation_date: (!cmd.no_date).then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }),
        threads: 0,
    };
    // The bar draws only when stderr is a terminal, so scripts and tests see no
    // escape codes.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("hashing {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let made = create::create(&source, &options, &|n| bar.inc(n));
    bar.finish_and_clear();
    let made = made.map_err(failure)?;
    create::write_new(&cmd.output, &made.torrent).map_err(failure)?;

    outln!(
        "created {}: {} in {} file{}, {} pieces of {}",
        cmd.output.display(),
        HumanBytes(total),
        source.files.len(),
        if source.files.len() == 1 { "" } else { "s" },
        made.num_pieces,
        HumanBytes(made.piece_size),
    );
    if let Some(v1) = made.info_hash_v1 {
        outln!("info-hash v1: {v1}");
    }
    if let Some(v2) = made.info_hash_v2 {
        outln!("info-hash v2: {}", hex(&v2));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The exit code for each kind of failure: 3 when the input cannot be read, 5 when the
/// output cannot be written, 2 for what cannot be made as asked.
fn failure(error: CreateError) -> Failure {
    let code = if error.is_input_io() {
        exit::UNREADABLE
    } else if error.is_output() {
        exit::OUTPUT_NOT_WRITABLE
    } else {
        exit::USAGE
    };
    Failure {
        code,
        error: error.into(),
    }
}
