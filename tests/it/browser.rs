//! `serve`'s web page in a real browser: headless Chromium through chromedriver, against
//! a daemon on loopback that downloads from libtorrent seeders found through opentracker.
//!
//! The test clicks what a person would click and reads what they would read; it checks
//! the files on disk at the end, and leaves screenshots in `target/test-artifacts/`
//! (under `CARGO_TARGET_DIR` when that is set). Without chromedriver and Chromium it is
//! skipped with a note, except in CI, where it must run. Every wait has a time bound and
//! none has an upper bound on speed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torrent_actors::magnet::Magnet;
use torrent_actors::InfoHash;

use crate::support::{
    assert_same_files, make_torrent, with_announce, Browser, BrowserTools, Daemon, DaemonOpts,
    LtSeeder, Payload, SeedOpts, Tracker,
};

/// How long a download from a loopback seeder may take, metadata included.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(120);

/// How long the page may take to show the outcome of a click, the server's one-second
/// pushes included.
pub(crate) const UI_LIMIT: Duration = Duration::from_secs(30);

/// Pieces of 32 KiB, mktorrent's smallest: a payload of under a megabyte still has a
/// map of a couple of dozen pieces.
const PIECE_EXP: u32 = 15;

/// Whether the environment says this is a CI run.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The browser, or `None` with a note when it is missing outside CI.
pub(crate) fn browser_tools(test: &str) -> Option<BrowserTools> {
    match BrowserTools::find() {
        Ok(tools) => Some(tools),
        Err(why) => {
            assert!(
                !in_ci(),
                "CI is set but {test} cannot run: {why}; .ci/run must install chromium and chromium-driver"
            );
            eprintln!(
                "{test}: skipped: {why}; install chromium and chromium-driver, or set CHROMEDRIVER and CHROMIUM"
            );
            None
        }
    }
}

/// `target/test-artifacts`, made if needed.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        );
    let dir = target.join("test-artifacts");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Saves a screenshot as `serve-ui-{name}.png` and says where.
pub(crate) fn screenshot(browser: &Browser, name: &str) {
    let path = artifacts_dir().join(format!("serve-ui-{name}.png"));
    browser.screenshot(&path);
    eprintln!("screenshot: {}", path.display());
}

/// A torrent made without trackers, and its info-hash; pointed at the tracker later.
fn bare_torrent(payload: &Payload, tmp: &Path) -> (PathBuf, InfoHash) {
    let bare = tmp.join(format!("{}.bare.torrent", payload.name));
    let hash = make_torrent(&payload.root(), &bare, PIECE_EXP, &[]);
    (bare, hash)
}

/// The pieces of a torrent of `total` bytes that touch any of the `[start, end)` ranges.
fn pieces_touching(ranges: &[(u64, u64)], total: u64) -> u64 {
    let piece = 1u64 << PIECE_EXP;
    (0..total.div_ceil(piece))
        .filter(|p| {
            let (start, end) = (p * piece, ((p + 1) * piece).min(total));
            ranges.iter().any(|&(a, b)| a < end && start < b)
        })
        .count() as u64
}

/// The list row of torrent `id` as `{state, progress, name}`, or null.
const ROW_SCRIPT: &str = r#"
const tr = document.querySelector(`#torrent-rows tr[data-id="${arguments[0]}"]`);
if (!tr) return null;
return {
  state: tr.dataset.state,
  progress: tr.querySelector('.progress-text').textContent,
  name: tr.querySelector('.name').textContent,
  labels: Array.from(tr.querySelectorAll('.labels .tag')).map((t) => t.textContent),
};
"#;

/// How many pixels of a canvas are painted (not fully transparent), and its size.
const CANVAS_SCRIPT: &str = r#"
const c = document.querySelector(arguments[0]);
if (!c || !c.width || !c.height) return {width: 0, height: 0, painted: 0};
const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let painted = 0;
for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
return {width: c.width, height: c.height, painted};
"#;

/// The cells of every row of the peers table.
const PEERS_SCRIPT: &str = r#"
return Array.from(document.querySelectorAll('#peers-table tbody tr'))
  .map((tr) => Array.from(tr.cells).map((td) => td.textContent));
"#;

fn row(browser: &Browser, id: &str) -> Value {
    browser.execute(ROW_SCRIPT, &[json!(id)])
}

/// Waits until the list row of `id` satisfies `done`, and returns it.
pub(crate) fn wait_for_row(
    browser: &Browser,
    id: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    browser.wait_until(&format!("the row of {id}: {what}"), limit, |b| {
        let r = row(b, id);
        (!r.is_null() && done(&r)).then_some(r)
    })
}

pub(crate) fn is_complete(row: &Value) -> bool {
    row["state"] == "seeding" && row["progress"] == "100%"
}

/// Opens one tab of the detail view.
pub(crate) fn open_tab(browser: &Browser, tab: &str) {
    browser.click_css(&format!("#detail [data-tab=\"{tab}\"]"), UI_LIMIT);
    browser.wait_for(&format!("#detail [data-panel=\"{tab}\"]"), UI_LIMIT);
}

/// Waits until the canvas has a size and something drawn on it.
fn wait_for_painted_canvas(browser: &Browser, css: &str) -> Value {
    browser.wait_until(&format!("{css} painted"), UI_LIMIT, |b| {
        let c = b.execute(CANVAS_SCRIPT, &[json!(css)]);
        (c["painted"].as_u64().unwrap_or(0) > 0).then_some(c)
    })
}

fn text_of(browser: &Browser, css: &str) -> String {
    browser.text(&browser.find(css))
}

#[test]
fn web_page_adds_torrents_chooses_files_and_shows_the_download() {
    const TEST: &str = "web_page_adds_torrents_chooses_files_and_shows_the_download";
    let Some(tools) = browser_tools(TEST) else {
        return;
    };
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("ta-browser-")
        .tempdir()
        .expect("temp folder for the browser test");
    let seed_dir = tmp.path().join("seed");

    // Three files whose ends do not fall on piece boundaries, so the middle one, left
    // out, shares pieces with both neighbours; and one file to add as a .torrent.
    let three_files: Vec<(PathBuf, u64)> =
        [("a.bin", 300_001), ("b.bin", 200_003), ("c.bin", 250_007)]
            .iter()
            .map(|(name, len)| {
                Payload::single(&seed_dir, &format!("three/{name}"), *len)
                    .files
                    .remove(0)
            })
            .collect();
    let three = Payload {
        dir: seed_dir.clone(),
        name: "three".into(),
        files: three_files,
    };
    let notes = Payload::single(&seed_dir, "notes.bin", 200_003);
    let (three_bare, three_hash) = bare_torrent(&three, tmp.path());
    let (notes_bare, notes_hash) = bare_torrent(&notes, tmp.path());
    let tracker = Tracker::start(&[three_hash, notes_hash]);
    let three_torrent = tmp.path().join("three.torrent");
    with_announce(&three_bare, &three_torrent, &tracker.http_url());
    let notes_torrent = tmp.path().join("notes.torrent");
    with_announce(&notes_bare, &notes_torrent, &tracker.http_url());
    // A slow seeder keeps the download going for several seconds, long enough to see it
    // in the peers tab before both ends are done.
    let three_seeder = LtSeeder::start(
        &three_torrent,
        &seed_dir,
        SeedOpts {
            upload_limit: Some(64 * 1024),
            ..SeedOpts::default()
        },
    );
    let _notes_seeder = LtSeeder::start(&notes_torrent, &seed_dir, SeedOpts::default());
    let link = Magnet {
        info_hash: three_hash,
        v2_info_hash: None,
        display_name: Some("three".into()),
        trackers: vec![tracker.http_url()],
        peers: vec![three_seeder.addr()],
        peer_hosts: Vec::new(),
        select_only: None,
    }
    .to_uri();

    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &DaemonOpts::default());
    let browser = Browser::start(&tools, 1280, 900);
    let three_id = three_hash.to_hex();
    let notes_id = notes_hash.to_hex();

    // The page loads, connects its live updates, and shows an empty list.
    browser.goto(&format!("{}/", daemon.base()));
    browser.wait_for("#sse-status[data-status=\"connected\"]", UI_LIMIT);
    browser.wait_for("#list-empty", UI_LIMIT);

    // Add the magnet, asking to choose the files once the metadata is in.
    browser.click_css("#add-button", UI_LIMIT);
    browser.wait_for("#add-dialog[open]", UI_LIMIT);
    browser.click_css("#add-dialog [data-add-tab=\"magnet\"]", UI_LIMIT);
    let magnet_box = browser.wait_for("#add-magnet", UI_LIMIT);
    browser.send_keys(&magnet_box, &link);
    browser.click_css("#add-choose-files", UI_LIMIT);
    browser.send_keys(&browser.find("#add-labels"), "browser");
    assert_eq!(
        browser.execute(
            "return document.querySelector('#add-choose-files').checked;",
            &[]
        ),
        true
    );
    screenshot(&browser, "add-magnet");
    browser.click_css("#add-submit", UI_LIMIT);
    browser.wait_for_script(
        "the add dialog closing",
        UI_LIMIT,
        "return !document.querySelector('#add-dialog').open;",
        &[],
    );

    // Once the metadata is in, the row waits for a file choice and opens on the Files tab.
    let awaiting = wait_for_row(&browser, &three_id, "awaiting files", DOWNLOAD_LIMIT, |r| {
        r["state"] == "awaiting_files"
    });
    assert_eq!(awaiting["name"], "three", "{awaiting}");
    assert_eq!(awaiting["labels"], json!(["browser"]), "{awaiting}");
    browser.click_css(
        &format!("#torrent-rows tr[data-id=\"{three_id}\"]"),
        UI_LIMIT,
    );
    browser.wait_for("#detail", UI_LIMIT);
    browser.wait_for("#files-awaiting", UI_LIMIT);
    let paths = browser.wait_for_script(
        "the three files listed",
        UI_LIMIT,
        "const p = Array.from(document.querySelectorAll('#files-table tbody td.path')).map((td) => td.textContent);
         return p.length === 3 ? p : null;",
        &[],
    );
    assert_eq!(paths, json!(["three/a.bin", "three/b.bin", "three/c.bin"]));
    browser.click_css(
        "#files-table tbody tr[data-index=\"1\"] input[type=checkbox]",
        UI_LIMIT,
    );
    let summary = text_of(&browser, "#files-summary");
    assert!(summary.starts_with("2 of 3 selected"), "{summary}");
    // Unticked is skipped; the last file is made high priority through its menu.
    let priorities = browser.execute(
        "const s = document.querySelector('#files-table tbody tr[data-index=\"2\"] select.priority');
         s.value = 'high'; s.dispatchEvent(new Event('change'));
         return Array.from(document.querySelectorAll('#files-table tbody select.priority')).map((x) => x.value);",
        &[],
    );
    assert_eq!(priorities, json!(["normal", "skip", "high"]));
    screenshot(&browser, "files-choice");
    browser.click_css("#files-start", UI_LIMIT);

    // The seeder shows in the peers tab while the download runs.
    open_tab(&browser, "peers");
    let peers = browser.wait_until("a loopback peer in the peers tab", DOWNLOAD_LIMIT, |b| {
        let rows = b.execute(PEERS_SCRIPT, &[]);
        let found = rows
            .as_array()?
            .iter()
            .any(|r| r[0].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")));
        found.then_some(rows)
    });
    eprintln!("peers tab: {peers}");
    screenshot(&browser, "peers");

    let done = wait_for_row(
        &browser,
        &three_id,
        "100% and seeding",
        DOWNLOAD_LIMIT,
        is_complete,
    );
    eprintln!(
        "the magnet torrent completed after {:?}: {done}",
        started.elapsed()
    );
    // The detail view shows the list's columns, not only the name.
    browser.wait_until("the detail's state column", UI_LIMIT, |b| {
        (text_of(b, "#detail-columns dd[data-col=\"state\"]") == "Seeding").then_some(())
    });
    let columns = browser.execute(
        "return Array.from(document.querySelectorAll('#detail-columns dt')).map((x) => x.textContent);",
        &[],
    );
    assert_eq!(
        columns,
        json!(["Size", "Progress", "State", "Down", "Up", "Peers", "Ratio", "ETA", "Labels"])
    );
    assert_eq!(
        text_of(&browser, "#detail-columns dd[data-col=\"labels\"]"),
        "browser"
    );

    // The piece map: the pieces of the two chosen files are in; those only the middle
    // file needs are not wanted, and nothing is missing.
    open_tab(&browser, "pieces");
    let total: u64 = three.total_len();
    let have = pieces_touching(&[(0, 300_001), (500_004, total)], total);
    let count = total.div_ceil(1 << PIECE_EXP);
    browser.wait_until("the piece counts", UI_LIMIT, |b| {
        (text_of(b, "#pieces-have") == have.to_string()).then_some(())
    });
    assert_eq!(text_of(&browser, "#pieces-missing"), "0");
    assert_eq!(
        text_of(&browser, "#pieces-unwanted"),
        (count - have).to_string()
    );
    let canvas = wait_for_painted_canvas(&browser, "#pieces-canvas");
    eprintln!("piece map canvas: {canvas}");
    screenshot(&browser, "pieces");

    open_tab(&browser, "speed");
    let canvas = wait_for_painted_canvas(&browser, "#speed-canvas");
    eprintln!("speed canvas: {canvas}");
    screenshot(&browser, "speed");

    // A message trace recorded from the actors tab across a pause and a resume.
    open_tab(&browser, "actors");
    browser.click_css("#trace-start", UI_LIMIT);
    browser.wait_until("the trace recording", UI_LIMIT, |b| {
        text_of(b, "#trace-status")
            .starts_with("Recording:")
            .then_some(())
    });

    // Pause and resume from the detail view; the list row follows.
    browser.click_css("#pause-button", UI_LIMIT);
    wait_for_row(&browser, &three_id, "paused", UI_LIMIT, |r| {
        r["state"] == "paused"
    });
    browser.wait_until("the detail header saying Paused", UI_LIMIT, |b| {
        (text_of(b, "#detail-state") == "Paused").then_some(())
    });
    browser.click_css("#resume-button:enabled", UI_LIMIT);
    wait_for_row(&browser, &three_id, "seeding again", UI_LIMIT, is_complete);
    // The new run's actors recorded into the same trace; stopping it saves the file.
    browser.wait_until("events in the trace", UI_LIMIT, |b| {
        let status = text_of(b, "#trace-status");
        let count = status.strip_prefix("Recording: ")?.split(' ').next()?;
        (count.replace(',', "").parse::<u64>().ok()? > 0).then_some(())
    });
    // The actor graph: instances as nodes (the new run's Coordinator among them, by its
    // number), and its start-up messages drawn as arrows from it.
    let graph = browser.wait_until("an arrow from a Coordinator instance", UI_LIMIT, |b| {
        let drawn = b.execute(
            "return {nodes: Array.from(document.querySelectorAll('#actors-graph g[data-node]')).map((g) => g.dataset.node),\
             arrows: Array.from(document.querySelectorAll('#actors-graph line.edge')).map((l) => [l.dataset.from, l.dataset.to])};",
            &[],
        );
        let instance = |id: &Value, actor: &str| {
            id.as_str()
                .and_then(|id| id.strip_prefix(actor))
                .is_some_and(|n| n.parse::<u64>().is_ok())
        };
        let nodes = drawn["nodes"].as_array()?;
        let arrows = drawn["arrows"].as_array()?;
        (nodes.iter().any(|n| instance(n, "Coordinator#"))
            && arrows.iter().any(|a| instance(&a[0], "Coordinator#"))
            && arrows.iter().all(|a| nodes.contains(&a[0]) && nodes.contains(&a[1])))
        .then_some(drawn)
    });
    eprintln!("actor graph: {graph}");
    screenshot(&browser, "trace");
    browser.click_css("#trace-stop", UI_LIMIT);
    browser.wait_until("the trace saved", UI_LIMIT, |b| {
        text_of(b, "#trace-status")
            .contains("Saved three.trace.json")
            .then_some(())
    });
    browser.wait_for("#trace-start", UI_LIMIT);
    let trace_left = daemon.request("GET", &format!("/api/torrents/{three_id}/trace"), None);
    assert_eq!(trace_left.status, 409, "the trace still records after Stop");

    let wanted = [three.files[0].clone(), three.files[2].clone()];
    assert_same_files(&three.dir, &dl, &wanted);
    let skipped = dl.join(&three.files[1].0);
    assert!(!skipped.exists(), "{} was written", skipped.display());

    // A .torrent through the file tab of the dialog: the page reads it, shows its files,
    // and adds it.
    browser.click_css("#add-button", UI_LIMIT);
    browser.wait_for("#add-dialog[open]", UI_LIMIT);
    browser.click_css("#add-dialog [data-add-tab=\"file\"]", UI_LIMIT);
    let file_input = browser.wait_for("#add-file", UI_LIMIT);
    browser.send_keys(&file_input, &notes_torrent.display().to_string());
    browser.wait_for("#add-inspect", UI_LIMIT);
    assert_eq!(text_of(&browser, "#add-inspect-name"), "notes.bin");
    let listed = browser.execute(
        "return Array.from(document.querySelectorAll('#add-files li .path')).map((s) => s.textContent);",
        &[],
    );
    assert_eq!(listed, json!(["notes.bin"]));
    screenshot(&browser, "add-file");
    browser.click_css("#add-submit", UI_LIMIT);
    browser.wait_for_script(
        "the add dialog closing",
        UI_LIMIT,
        "return !document.querySelector('#add-dialog').open;",
        &[],
    );
    wait_for_row(
        &browser,
        &notes_id,
        "100% and seeding",
        DOWNLOAD_LIMIT,
        is_complete,
    );
    assert_same_files(&notes.dir, &dl, &notes.files);

    // The list with both, and the first one's piece map beside it, opened anew.
    browser.click_css("#detail-close", UI_LIMIT);
    browser.wait_for_script(
        "the detail view closing",
        UI_LIMIT,
        "return document.querySelector('#detail').hidden;",
        &[],
    );

    // Bulk actions: both torrents ticked, paused together, resumed together.
    for id in [&three_id, &notes_id] {
        browser.click_css(
            &format!("#torrent-rows tr[data-id=\"{id}\"] input.row-pick"),
            UI_LIMIT,
        );
    }
    browser.wait_until("the bulk bar with two torrents", UI_LIMIT, |b| {
        (text_of(b, "#bulk-count") == "2 selected").then_some(())
    });
    screenshot(&browser, "bulk");
    browser.click_css("#bulk-pause", UI_LIMIT);
    for id in [&three_id, &notes_id] {
        wait_for_row(&browser, id, "paused in bulk", UI_LIMIT, |r| {
            r["state"] == "paused"
        });
    }
    browser.click_css("#bulk-resume", UI_LIMIT);
    for id in [&three_id, &notes_id] {
        wait_for_row(&browser, id, "resumed in bulk", UI_LIMIT, is_complete);
    }
    browser.click_css("#bulk-clear", UI_LIMIT);

    browser.click_css(
        &format!("#torrent-rows tr[data-id=\"{three_id}\"]"),
        UI_LIMIT,
    );
    open_tab(&browser, "pieces");
    wait_for_painted_canvas(&browser, "#pieces-canvas");
    screenshot(&browser, "list-and-pieces");

    // The same page on a phone-sized window.
    browser.click_css("#detail-close", UI_LIMIT);
    browser.set_window_size(390, 844);
    browser.wait_until("the phone-sized viewport", UI_LIMIT, |b| {
        (b.execute("return window.innerWidth;", &[]).as_u64()? <= 390).then_some(())
    });
    screenshot(&browser, "phone-list");
    let overflow = browser.execute(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        &[],
    );
    eprintln!("phone-sized page: {overflow} px wider than the viewport");
    browser.click_css(
        &format!("#torrent-rows tr[data-id=\"{three_id}\"]"),
        UI_LIMIT,
    );
    open_tab(&browser, "pieces");
    wait_for_painted_canvas(&browser, "#pieces-canvas");
    screenshot(&browser, "phone-detail");

    eprintln!("{TEST} took {:?}", started.elapsed());
}

#[test]
fn web_page_logs_in_with_the_api_key_and_then_loads_the_list() {
    const TEST: &str = "web_page_logs_in_with_the_api_key_and_then_loads_the_list";
    let Some(tools) = browser_tools(TEST) else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("ta-browser-login-")
        .tempdir()
        .expect("temp folder for the login test");
    let key = "a-key-long-enough-for-the-daemon";
    let daemon = Daemon::start_keyed(tmp.path(), key, DaemonOpts::default());
    // One paused torrent, added with the key, for the list to show once logged in.
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let reply = daemon.post(
        "/api/torrents",
        &json!({"magnet": format!("magnet:?xt=urn:btih:{hash}&dn=behind-the-login"), "paused": true}),
    );
    assert!(reply.status < 300, "adding the torrent: {reply:?}");

    let browser = Browser::start(&tools, 1280, 900);
    browser.goto(&format!("{}/", daemon.base()));
    // The page asks for the key and shows nothing else.
    let key_box = browser.wait_for("#login-key", UI_LIMIT);
    assert_eq!(
        browser.execute("return document.querySelector('#app').hidden;", &[]),
        true
    );
    screenshot(&browser, "login");
    // A wrong key is refused with a message, and the form stays.
    browser.send_keys(&key_box, "not-the-key-at-all");
    browser.click_css("#login-submit", UI_LIMIT);
    let error = browser.wait_for("#login-error", UI_LIMIT);
    assert_eq!(browser.text(&error), "Wrong key.");
    browser.execute("document.querySelector('#login-key').value = '';", &[]);

    browser.send_keys(&key_box, key);
    browser.click_css("#login-submit", UI_LIMIT);
    browser.wait_for(&format!("#torrent-rows tr[data-id=\"{hash}\"]"), UI_LIMIT);
    browser.wait_for("#sse-status[data-status=\"connected\"]", UI_LIMIT);
    screenshot(&browser, "logged-in");
    // Logged in, the page changes state too: it has the token now.
    let resumed = browser.wait_for_script(
        "a write from the logged-in page",
        UI_LIMIT,
        &format!(
            "return api('POST', '/api/torrents/{hash}/resume', {{}}).then(() => 'ok', (e) => 'failed ' + e.status);"
        ),
        &[],
    );
    assert_eq!(resumed, "ok", "a write after logging in");
}

#[test]
fn web_page_shows_a_queued_torrent_and_removes_torrents_in_bulk() {
    const TEST: &str = "web_page_shows_a_queued_torrent_and_removes_torrents_in_bulk";
    let Some(tools) = browser_tools(TEST) else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("ta-browser-queue-")
        .tempdir()
        .expect("temp folder for the queue test");
    // One download slot. Two magnet links with no peers: the first fetches metadata
    // for ever and holds the slot, so the second waits queued.
    let daemon = Daemon::start(
        &tmp.path().join("dl"),
        &tmp.path().join("state"),
        &DaemonOpts {
            args: vec!["--max-active-downloads".into(), "1".into()],
            ..DaemonOpts::default()
        },
    );
    let first = "1111111111111111111111111111111111111111";
    let second = "2222222222222222222222222222222222222222";
    for (hash, name) in [(first, "holds-the-slot"), (second, "waits")] {
        let reply = daemon.post(
            "/api/torrents",
            &json!({"magnet": format!("magnet:?xt=urn:btih:{hash}&dn={name}")}),
        );
        assert_eq!(reply.status, 201, "adding {name}: {reply:?}");
    }

    let browser = Browser::start(&tools, 1280, 900);
    browser.goto(&format!("{}/", daemon.base()));
    browser.wait_for("#sse-status[data-status=\"connected\"]", UI_LIMIT);
    wait_for_row(&browser, first, "fetching metadata", UI_LIMIT, |r| {
        r["state"] == "metadata"
    });
    wait_for_row(&browser, second, "queued", UI_LIMIT, |r| {
        r["state"] == "queued"
    });
    assert_eq!(
        text_of(
            &browser,
            &format!("#torrent-rows tr[data-id=\"{second}\"] .state")
        ),
        "Queued"
    );
    // The state chip for queued torrents counts one and shows only that row.
    browser.click_css("#state-chips .chip[data-state=\"queued\"]", UI_LIMIT);
    browser.wait_until("only the queued row shown", UI_LIMIT, |b| {
        let ids = b.execute(
            "return Array.from(document.querySelectorAll('#torrent-rows tr[data-id]')).map((tr) => tr.dataset.id);",
            &[],
        );
        (ids == json!([second])).then_some(())
    });
    assert_eq!(
        text_of(&browser, "#state-chips .chip[data-state=\"queued\"] .count"),
        "1"
    );
    screenshot(&browser, "queued");
    browser.click_css("#state-chips .chip[data-state=\"\"]", UI_LIMIT);

    // Pausing the one that holds the slot lets the queued one start.
    browser.click_css(
        &format!("#torrent-rows tr[data-id=\"{first}\"] input.row-pick"),
        UI_LIMIT,
    );
    browser.click_css("#bulk-pause", UI_LIMIT);
    wait_for_row(&browser, first, "paused", UI_LIMIT, |r| {
        r["state"] == "paused"
    });
    wait_for_row(&browser, second, "out of the queue", UI_LIMIT, |r| {
        r["state"] == "metadata"
    });

    // Both ticked and removed in bulk, past the page's confirmation.
    browser.click_css(
        &format!("#torrent-rows tr[data-id=\"{second}\"] input.row-pick"),
        UI_LIMIT,
    );
    browser.wait_until("the bulk bar with two torrents", UI_LIMIT, |b| {
        (text_of(b, "#bulk-count") == "2 selected").then_some(())
    });
    browser.execute("window.confirm = () => true;", &[]);
    browser.click_css("#bulk-remove", UI_LIMIT);
    browser.wait_for("#list-empty", UI_LIMIT);
    for id in [first, second] {
        assert!(row(&browser, id).is_null(), "{id} still listed");
    }
    assert_eq!(daemon.get_json("/api/torrents"), json!([]));
}
