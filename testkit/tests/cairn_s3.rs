//! The `cairn-s3` binary's command line: `--help` answers (it used to ask for a value), and
//! says the bucket is deleted on exit unless `--dir` keeps it.

use std::process::Command;

#[test]
fn help_prints_the_usage_and_where_the_bucket_lives() {
    for flag in ["--help", "-h"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn-s3"))
            .arg(flag)
            .output()
            .expect("cairn-s3 runs");
        assert!(out.status.success(), "{flag}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("usage: cairn-s3"), "{text}");
        assert!(text.contains("deleted when cairn-s3 stops"), "{text}");
    }
}

#[test]
fn an_unknown_flag_is_refused_with_the_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-s3"))
        .args(["--bogus", "x"])
        .output()
        .expect("cairn-s3 runs");
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("unknown flag --bogus") && text.contains("usage:"),
        "{text}"
    );
}
