//! The docs cannot drift from the code: every link in the README and in `docs/` resolves (a
//! relative link names a file of the repository, and a `#fragment` names a heading of the
//! page it points to, GitHub's anchors; links to other sites are not followed: tests reach no
//! network beyond loopback), and every shell example of the README's tour runs as written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The page's text outside code fences.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

fn anchors(page: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(page).unwrap();
    prose(&text)
        .into_iter()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The targets of the page's `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_link_in_the_readme_and_docs_resolves() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    assert!(pages.len() > 1, "docs/ has pages");
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        assert!(
            page.ends_with("README.md") || text.lines().nth(2).is_some_and(|l| !l.is_empty()),
            "{} starts with what it is for",
            page.display()
        );
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, fragment) = match link.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", page.display()));
            } else if let Some(a) = fragment
                && !anchors(&target).contains(a)
            {
                broken.push(format!("{}: {link} (no such heading)", page.display()));
            }
        }
    }
    assert!(checked > 10, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The shell blocks of the README's tour, each a list of lines.
fn tour_blocks(readme: &str) -> Vec<Vec<String>> {
    let tour = readme
        .split("\n## ")
        .find(|s| s.starts_with("A five-minute tour"))
        .expect("the README has a tour");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in tour.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => current = Some(Vec::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some(b), _) => b.push(line.to_string()),
            _ => {}
        }
    }
    blocks
}

/// One tour block as a bash script: the build line goes (the binaries are built), servers
/// (`serve`, `cairn-s3`) start in the background and are waited for until they say they
/// serve, and every other line must exit 0, or the code its comment names ("exit code 1").
fn tour_script(block: &[String]) -> String {
    let mut s = String::from(
        "set -u\nbg=()\ntrap 'kill ${bg[@]+\"${bg[@]}\"} 2>/dev/null; wait 2>/dev/null' EXIT\n\
         serving() { for _ in $(seq 300); do grep -q serving \"$1\" && return 0; sleep 0.1; done; \
         echo \"no 'serving' line in $1:\"; cat \"$1\"; exit 1; }\n",
    );
    for (n, raw) in block.iter().enumerate() {
        let line = raw
            .replace("./target/release/", "$BIN/")
            .replace("/tmp/", "$WORK/tmp-");
        if line.trim_start().starts_with("cargo build") {
            continue;
        }
        let (cmd, comment) = match line.find(" # ") {
            Some(at) => (line[..at].trim(), &line[at + 3..]),
            None => (line.trim(), ""),
        };
        if cmd.is_empty() {
            continue;
        }
        let n = n + 1;
        if cmd.starts_with("export ") {
            s += &format!("{cmd}\n");
        } else if cmd.contains(" serve ") || cmd.contains("cairn-s3") {
            let cmd = cmd.trim_end_matches('&').trim();
            s += &format!("{cmd} > bg{n}.log 2>&1 &\nbg+=($!)\nserving bg{n}.log\n");
        } else {
            let want = comment
                .split("exit code ")
                .nth(1)
                .and_then(|c| c.split(|ch: char| !ch.is_ascii_digit()).next())
                .unwrap_or("0");
            s += &format!(
                "( {cmd} ); got=$?\n[ $got -eq {want} ] || {{ echo \"line {n} exited $got, not {want}\"; exit 1; }}\n"
            );
        }
    }
    s
}

/// Every shell example of the README's tour runs as written, in a directory of its own with
/// the repository's `cairn.toml`, `cairn` on the PATH and the servers it starts: docs that
/// drift from the commands fail here.
#[test]
fn the_readme_tour_runs_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = tour_blocks(&readme);
    assert!(blocks.len() >= 4, "the tour has its four blocks");
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn")).parent().unwrap();
    for block in &blocks {
        let text = block.join("\n");
        if text.contains("cairn-s3") && !bin.join("cairn-s3").exists() {
            // Built by `cargo test --workspace`, not by this crate's tests alone.
            assert!(std::env::var_os("CI").is_none(), "cairn-s3 is not built");
            eprintln!(
                "skipping a tour block: cairn-s3 is not built (cargo build -p cairn-testkit)"
            );
            continue;
        }
        let work = tempfile::tempdir().unwrap();
        std::fs::copy(root.join("cairn.toml"), work.path().join("cairn.toml")).unwrap();
        std::fs::create_dir(work.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cairn"), work.path().join("bin/cairn"))
            .unwrap();
        let path = format!(
            "{}:{}",
            work.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c")
            .arg(tour_script(block))
            .current_dir(work.path())
            .env("PATH", path)
            .env("WORK", work.path())
            .env("BIN", bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CAIRN_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "the tour block\n{text}\nfailed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One example of a page: a command and the output it shows, and the exit code its comment
/// names (`# exit code 2`).
struct Example {
    command: String,
    output: String,
    code: i32,
}

/// A page's ```toml block (its config) and the examples of its ```sh blocks: a line `$ CMD`
/// is a command, and the lines up to the next command or the block's end its exact output.
fn examples(page: &str) -> (String, Vec<Example>) {
    let (mut config, mut examples) = (String::new(), Vec::<Example>::new());
    let mut block: Option<&str> = None;
    for line in page.lines() {
        match (block, line) {
            (None, l) if l.starts_with("```toml") => block = Some("toml"),
            (None, l) if l.starts_with("```sh") => block = Some("sh"),
            (Some(_), "```") => block = None,
            (Some("toml"), l) => config += &format!("{l}\n"),
            (Some("sh"), l) if l.starts_with("$ ") => {
                let cmd = &l[2..];
                let (command, code) = match cmd.split_once(" # exit code ") {
                    Some((c, code)) => (c, code.trim().parse().unwrap()),
                    None => (cmd, 0),
                };
                examples.push(Example {
                    command: command.to_string(),
                    output: String::new(),
                    code,
                });
            }
            (Some("sh"), l) => {
                let e = examples.last_mut().expect("output follows a command");
                e.output += &format!("{l}\n");
            }
            _ => {}
        }
    }
    (config, examples)
}

/// docs/querying.md as written: each example, run in order in a directory holding the page's
/// config, prints exactly the output the page shows and exits as it says. A line that runs
/// Python's duckdb is skipped where the module is missing outside CI.
#[test]
fn the_querying_page_runs_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let page = std::fs::read_to_string(root.join("docs/querying.md")).unwrap();
    let (config, examples) = examples(&page);
    assert!(config.contains("[default.values]"), "the page's config");
    assert!(examples.len() >= 10, "{} examples", examples.len());
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("cairn.toml"), config).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let duckdb = std::process::Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    for e in &examples {
        if e.command.contains("duckdb") && !duckdb {
            assert!(std::env::var_os("CI").is_none(), "duckdb is missing in CI");
            eprintln!("skipping (pip install duckdb): {}", e.command);
            continue;
        }
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c")
            .arg(&e.command)
            .current_dir(work.path())
            .env("PATH", &path);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CAIRN_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(e.code),
            "{}: {}",
            e.command,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            e.output,
            "{}",
            e.command
        );
    }
}
