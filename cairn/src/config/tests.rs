//! Config loading: profiles, environment overrides, defaults, and errors that name the key
//! and the file.

use super::*;

const FILE: &str = r#"
[default]
data_dir = "./data"

[default.journal]
kind = "file"
sync = true

[default.engine]
memtable_bytes = 1048576

[nosync.journal]
sync = false

[ephemeral]
data_dir = "/tmp/eph"
[ephemeral.journal]
kind = "memory"

[broken.journal]
kind = "memory"
sync = true
"#;

fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Runs `f` under figment's Jail: tests that load config (and so read `CAIRN_*`) take turns,
/// and variables set through the jail are restored afterwards.
// The closure's error type is figment's, which the Jail API fixes.
#[allow(clippy::result_large_err)]
fn jailed(f: impl FnOnce(&mut figment::Jail)) {
    figment::Jail::expect_with(|jail| {
        f(jail);
        Ok(())
    });
}

#[test]
fn profiles_defaults_and_environment_overrides() {
    jailed(|jail| {
        let (_d, path) = write(FILE);
        let c = Config::load(&path, Some("default")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.journal.sync, Some(true));
        assert_eq!(c.engine.memtable_bytes, 1 << 20);
        assert_eq!(c.memtable.kind, MemtableKind::SingleLock);
        assert_eq!(c.compaction, CompactionSection::default());

        let c = Config::load(&path, Some("nosync")).unwrap();
        assert_eq!(c.journal.sync, Some(false), "the profile overrides default");
        assert_eq!(c.engine.memtable_bytes, 1 << 20, "and inherits the rest");

        jail.set_env("CAIRN_JOURNAL__SYNC", "false");
        jail.set_env("CAIRN_DATA_DIR", "/elsewhere");
        jail.set_env("CAIRN_PROFILE", "nosync");
        let c = Config::load(&path, Some("default")).unwrap();
        assert_eq!(c.journal.sync, Some(false));
        assert_eq!(c.data_dir, PathBuf::from("/elsewhere"));
        assert_eq!(Config::selected_profile(None), "nosync");
        assert_eq!(
            Config::selected_profile(Some("x")),
            "x",
            "the flag beats the variable"
        );

        jail.set_env("CAIRN_JOURNAL__SYNC", "perhaps");
        let err = Config::load(&path, Some("default")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("journal.sync"), "{err}");
        assert!(
            err.to_string().contains("CAIRN_JOURNAL__SYNC"),
            "names the variable: {err}"
        );

        jail.set_env("CAIRN_JOURNAL__SYNC", "true");
        jail.set_env("CAIRN_ENGINE__NO_SUCH_KEY", "1");
        let err = Config::load(&path, Some("default")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("engine.no_such_key"), "{err}");
        assert!(
            err.to_string().contains("CAIRN_ENGINE__NO_SUCH_KEY"),
            "{err}"
        );
    });
}

fn load_err(text: &str, profile: &str) -> (ConfigError, String) {
    let (_d, path) = write(text);
    let err = Config::load(&path, Some(profile)).unwrap_err();
    let file = path.display().to_string();
    (err, file)
}

#[test]
fn unknown_keys_name_the_key_and_the_file() {
    jailed(|_| {
        let (err, file) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.journal]\nsnyc = true\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("journal.snyc"), "{err}");
        assert!(err.to_string().contains(&file), "names the file: {err}");

        let (err, _) = load_err("[default]\ndata_dir = \"d\"\ncolour = 1\n", "default");
        assert_eq!(err.key.as_deref(), Some("colour"), "{err}");
    });
}

#[test]
fn a_bad_values_section_names_the_key_and_the_file() {
    jailed(|_| {
        let base = "[default]\ndata_dir = \"d\"\n[default.values]\n";
        for (text, key) in [
            (
                "encoding = \"json\"\n[default.values.fields]\nAmount = \"f64\"\n",
                "values.fields.Amount",
            ),
            (
                "encoding = \"json\"\n[default.values.fields]\namount = \"decimal\"\n",
                "values.fields.amount",
            ),
            (
                "encoding = \"i64\"\n[default.values.fields]\nn = \"i64\"\n",
                "values.fields",
            ),
            ("encoding = \"yaml\"\n", "values.encoding"),
            ("encoding = \"i64\"\ncolumn = \"value\"\n", "values.column"),
        ] {
            let (err, file) = load_err(&format!("{base}{text}"), "default");
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert!(err.to_string().contains(&file), "names the file: {err}");
        }
        let (_d, path) = write(&format!(
            "{base}key = \"utf8\"\nencoding = \"json\"\n[default.values.fields]\namount = \"f64\"\n"
        ));
        let c = Config::load(&path, None).unwrap();
        assert_eq!(c.values.columns().len(), 1);
    });
}

#[test]
fn bad_values_name_the_key() {
    jailed(|_| {
        let (err, file) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.journal]\nsync = \"maybe\"\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("journal.sync"), "{err}");
        assert!(err.to_string().contains(&file), "{err}");

        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.storage]\nkind = \"floppy\"\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("storage.kind"), "{err}");
        assert!(
            err.to_string().contains("sstable"),
            "lists the valid kinds: {err}"
        );

        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.compaction]\nlevels = 1\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("compaction.levels"), "{err}");

        for (section, key) in [
            ("journal", "journal.database"),
            ("storage", "storage.database"),
        ] {
            let (err, file) = load_err(
                &format!(
                    "[default]\ndata_dir = \"d\"\n[default.{section}]\nkind = \"grpc\"\nurl = \"http://h:1\"\ndatabase = \"../etc\"\n"
                ),
                "default",
            );
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert!(
                err.to_string().contains(&file) && err.to_string().contains("../etc"),
                "{err}"
            );
        }
        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.journal]\ndatabase = \"a\"\n",
            "default",
        );
        assert_eq!(
            err.key.as_deref(),
            Some("journal.database"),
            "only for a grpc journal: {err}"
        );
    });
}

#[test]
fn impossible_pairings_are_rejected() {
    jailed(|_| {
        let (_d, path) = write(FILE);
        let c = Config::load(&path, Some("ephemeral"))
            .expect("keys inherited from [default] that only a file journal has are dropped");
        assert_eq!(
            (c.journal.kind, c.journal.sync),
            (JournalKind::Memory, None)
        );
        let (err, file) = load_err(FILE, "broken");
        assert_eq!(
            err.key.as_deref(),
            Some("journal.sync"),
            "a memory journal has nothing to sync: {err}"
        );
        assert!(err.to_string().contains(&file), "{err}");

        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.memtable]\nkind = \"single_lock\"\nshards = 8\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("memtable.shards"), "{err}");

        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.metrics]\nlisten = \"nowhere\"\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("metrics.listen"), "{err}");

        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.engine]\nl0_stop_writes = 2\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("engine.l0_stop_writes"), "{err}");
    });
}

#[test]
fn missing_file_profile_and_data_dir_are_clear_errors() {
    jailed(|_| {
        let err = Config::load(Path::new("/no/such/cairn.toml"), None).unwrap_err();
        assert!(err.to_string().contains("/no/such/cairn.toml"), "{err}");
        let (err, _) = load_err(FILE, "nope");
        assert!(err.to_string().contains("profile `nope`"), "{err}");
        assert!(
            err.to_string().contains("nosync"),
            "lists the defined profiles: {err}"
        );
        let (err, _) = load_err("[default.journal]\nsync = true\n", "default");
        assert_eq!(err.key.as_deref(), Some("data_dir"), "{err}");
    });
}

#[test]
fn resolved_config_round_trips_through_toml() {
    jailed(|_| {
        let (_d, path) = write(FILE);
        let c = Config::load(&path, Some("nosync")).unwrap().resolved();
        assert_eq!(c.journal.segment_bytes, Some(64 << 20));
        assert_eq!(c.storage.block_cache_bytes, Some(64 << 20));
        let text = c.to_toml().unwrap();
        let back =
            Config::from_toml_str(&format!("[default]\n{}", indent_under_default(&text)), None)
                .unwrap();
        assert_eq!(back, c);
    });
}

/// Puts a printed config under `[default]` so it reads back as a profile file.
fn indent_under_default(text: &str) -> String {
    text.lines()
        .map(|l| {
            if let Some(section) = l.strip_prefix('[') {
                format!("[default.{section}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shipped_hybrid_and_cloud_profiles_load_and_drop_inherited_sstable_keys() {
    jailed(|_| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml");
        for profile in ["hybrid", "cloud", "serverless"] {
            let c = Config::load(&path, Some(profile)).unwrap();
            assert_eq!(c.storage.kind, StorageKind::Hybrid, "{profile}");
            assert_eq!(
                c.storage.block_bytes, None,
                "{profile}: inherited from [default]"
            );
            let primary = c.storage.primary.as_ref().unwrap();
            let secondary = c.storage.secondary.as_ref().unwrap();
            assert_eq!(primary.kind, StorageKind::Sstable);
            assert_eq!(secondary.kind, StorageKind::Parquet);
        }
        let c = Config::load(&path, Some("serverless")).unwrap();
        assert_eq!(c.journal.kind, JournalKind::Object);
        assert_eq!(c.journal.url.as_deref(), Some("s3://cairn/journal"));
        assert_eq!(
            c.journal.sync, None,
            "inherited from [default]'s file journal"
        );
        let c = Config::load(&path, Some("hybrid")).unwrap().resolved();
        let secondary = c.storage.secondary.as_ref().unwrap();
        let url = secondary.url.as_deref().unwrap();
        assert!(
            url.starts_with("file:///") && url.ends_with("cairn-data-hybrid/parquet"),
            "{url}"
        );
    });
}

/// Per-level codecs parse from their spelled names; a bad name or level is an error naming
/// the key and the file, as is a parquet key on an sstable store.
#[test]
fn compression_per_level_is_read_and_checked() {
    jailed(|_| {
        let sst = |extra: &str| {
            format!("[default]\ndata_dir = \"d\"\n[default.storage]\nkind = \"sstable\"\n{extra}")
        };
        let c = Config::from_toml_str(
            &sst(
                "compression = \"zstd\"\ncompression_per_level = [\"none\", \"lz4\", \"zstd:9\"]\n",
            ),
            None,
        )
        .unwrap();
        let o = c.storage.sst_options(std::path::Path::new("d"));
        assert_eq!(o.compression, cairn_filestore::Compression::Zstd(3));
        assert_eq!(o.compression_at(0), cairn_filestore::Compression::None);
        assert_eq!(o.compression_at(6), cairn_filestore::Compression::Zstd(9));
        for (bad, key) in [
            ("compression = \"zstd:23\"\n", "storage.compression"),
            (
                "compression_per_level = [\"lz4\", \"brotli\"]\n",
                "storage.compression_per_level.1",
            ),
        ] {
            let (err, file) = load_err(&sst(bad), "default");
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert!(err.to_string().contains(&file), "{err}");
        }
        let (err, _) = load_err(&sst("zstd_level_per_level = [1, 9]\n"), "default");
        assert_eq!(
            err.key.as_deref(),
            Some("storage.zstd_level_per_level"),
            "{err}"
        );
        let pq = "[default]\ndata_dir = \"d\"\n[default.storage]\nkind = \"parquet\"\n\
                  zstd_level_per_level = [1, 30]\n";
        let (err, _) = load_err(pq, "default");
        assert_eq!(
            err.key.as_deref(),
            Some("storage.zstd_level_per_level"),
            "{err}"
        );
    });
}

#[test]
fn storage_keys_are_checked_against_their_kind_at_every_depth() {
    jailed(|_| {
        let hybrid = |extra: &str| {
            format!(
                "[default]\ndata_dir = \"d\"\n[default.storage]\nkind = \"hybrid\"\n\
                 [default.storage.primary]\nkind = \"sstable\"\n\
                 [default.storage.secondary]\nkind = \"parquet\"\nurl = \"memory://x\"\n{extra}"
            )
        };
        Config::from_toml_str(&hybrid(""), None).expect("a valid hybrid storage");
        let (err, file) = load_err(&hybrid("block_bytes = 4096\n"), "default");
        assert_eq!(
            err.key.as_deref(),
            Some("storage.secondary.block_bytes"),
            "{err}"
        );
        assert!(err.to_string().contains(&file), "{err}");
        let (err, _) = load_err(&hybrid("upload_part_bytes = 1024\n"), "default");
        assert_eq!(
            err.key.as_deref(),
            Some("storage.secondary.upload_part_bytes"),
            "{err}"
        );
        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.storage]\nkind = \"hybrid\"\n\
             [default.storage.primary]\nkind = \"sstable\"\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("storage.secondary"), "{err}");
        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.storage]\nkind = \"parquet\"\nurl = \"gs://b/p\"\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("storage.url"), "{err}");
        let (err, _) = load_err(
            "[default]\ndata_dir = \"d\"\n[default.storage]\nkind = \"sstable\"\nendpoint = \"http://x\"\n",
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("storage.endpoint"), "{err}");
    });
}

#[test]
fn nested_storage_keys_come_from_the_environment_too() {
    jailed(|jail| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml");
        jail.set_env(
            "CAIRN_STORAGE__SECONDARY__ENDPOINT",
            "http://127.0.0.1:1234",
        );
        let c = Config::load(&path, Some("cloud")).unwrap();
        let s = c.storage.secondary.unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:1234"));
        jail.set_env("CAIRN_STORAGE__SECONDARY__ZSTD_LEVEL", "many");
        let err = Config::load(&path, Some("cloud")).unwrap_err();
        assert!(
            err.to_string()
                .contains("CAIRN_STORAGE__SECONDARY__ZSTD_LEVEL"),
            "{err}"
        );
    });
}

#[test]
fn the_shipped_remote_profiles_load_with_grpc_kinds_and_drop_inherited_local_keys() {
    jailed(|_| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml");
        let c = Config::load(&path, Some("remote")).unwrap();
        assert_eq!(c.journal.kind, JournalKind::Grpc);
        assert_eq!(c.journal.url.as_deref(), Some("http://127.0.0.1:10001"));
        assert_eq!(c.journal.sync, None, "inherited from [default], a file key");
        assert_eq!(c.storage.kind, StorageKind::Grpc);
        assert_eq!(c.storage.url.as_deref(), Some("http://127.0.0.1:10002"));
        assert_eq!(c.storage.block_cache_bytes, Some(256 << 20));
        assert_eq!(c.storage.block_bytes, None);
        assert_eq!(c.compaction.kind, CompactionKind::Grpc);
        assert_eq!(c.compaction.fallback, Some(CompactionFallback::Local));
        let r = c.resolved();
        assert_eq!(r.compaction.timeout_ms, Some(10_000));
        assert_eq!(r.rpc.timeout_ms, Some(10_000));

        let node = Config::load(&path, Some("node")).unwrap();
        assert_eq!(node.journal.kind, JournalKind::File);
        assert_eq!(node.storage.kind, StorageKind::Sstable);
        let cs = node.compaction.storage.as_ref().unwrap();
        assert_eq!(
            (cs.kind, cs.url.as_deref()),
            (StorageKind::Grpc, Some("http://127.0.0.1:10002"))
        );
        for mixed in ["remote-journal", "remote-compaction", "remote-tables"] {
            Config::load(&path, Some(mixed)).unwrap();
        }
    });
}

#[test]
fn grpc_keys_are_checked_against_their_kind() {
    jailed(|_| {
        let base = "[default]\ndata_dir = \"d\"\n";
        let (err, file) = load_err(
            &format!("{base}[default.journal]\nkind = \"grpc\"\n"),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("journal.url"), "{err}");
        assert!(err.to_string().contains(&file), "{err}");
        let (err, _) = load_err(
            &format!("{base}[default.journal]\nkind = \"grpc\"\nurl = \"127.0.0.1:1\"\n"),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("journal.url"), "{err}");
        let (err, _) = load_err(
            &format!("{base}[default.journal]\nkind = \"file\"\nurl = \"http://h:1\"\n"),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("journal.url"), "{err}");
        let (err, _) = load_err(
            &format!(
                "{base}[default.storage]\nkind = \"grpc\"\nurl = \"http://h:1\"\nblock_bytes = 1\n"
            ),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("storage.block_bytes"), "{err}");
        let (err, _) = load_err(
            &format!("{base}[default.storage]\nkind = \"grpc\"\nurl = \"s3://b/p\"\n"),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("storage.url"), "{err}");
        let (err, _) = load_err(
            &format!("{base}[default.compaction]\nfallback = \"local\"\n"),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("compaction.fallback"), "{err}");
        let (err, _) = load_err(
            &format!(
                "{base}[default.compaction]\nkind = \"grpc\"\nurl = \"http://h:1\"\nfallback = \"maybe\"\n"
            ),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("compaction.fallback"), "{err}");
        for (section, key) in [
            ("urls = [\"http://h:1\", \"h:2\"]", "compaction.urls[1]"),
            (
                "url = \"http://h:1\"\nurls = [\"http://h:2\"]",
                "compaction.urls",
            ),
            ("url = \"http://h:1\"\nslots = 0", "compaction.slots"),
            (
                "url = \"http://h:1\"\nsubcompactions = 0",
                "compaction.subcompactions",
            ),
        ] {
            let (err, _) = load_err(
                &format!("{base}[default.compaction]\nkind = \"grpc\"\n{section}\n"),
                "default",
            );
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
        }
        let (err, _) = load_err(
            &format!("{base}[default.rpc]\ntls_cert = \"c.pem\"\n"),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("rpc.tls_cert"), "{err}");
        let (err, _) = load_err(&format!("{base}[default.rpc]\ntokn = \"x\"\n"), "default");
        assert_eq!(err.key.as_deref(), Some("rpc.tokn"), "{err}");
        let c = Config::from_toml_str(
            &format!("{base}[default.rpc]\ntoken = \"s3cret\"\ntimeout_ms = 250\n[default.storage]\nkind = \"grpc\"\nurl = \"https://h:1\"\ntimeout_ms = 99\n"),
            None,
        )
        .unwrap();
        let o = c.rpc.client("http://x:1", c.storage.timeout_ms);
        assert_eq!(o.timeout, std::time::Duration::from_millis(99));
        assert_eq!(o.token.as_deref(), Some("s3cret"));
        assert_eq!(c.rpc.client("http://x:1", None).timeout.as_millis(), 250);
        assert_eq!(c.resolved().rpc.token.as_deref(), Some("(set)"));
        let (err, _) = load_err(
            &format!(
                "{base}[default.rpc]\nscoped_tokens = [{{ token = \"t\", databases = [] }}]\n"
            ),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("rpc.scoped_tokens"), "{err}");
        let (err, _) = load_err(
            &format!(
                "{base}[default.rpc]\nscoped_tokens = [{{ token = \"t\", databases = [\"../x\"] }}]\n"
            ),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("rpc.scoped_tokens"), "{err}");
        let c = Config::from_toml_str(
            &format!("{base}[default.rpc]\nscoped_tokens = [{{ token = \"t\", databases = [\"a\"], read_only = true }}]\n"),
            None,
        )
        .unwrap();
        let shown = c.resolved().rpc.scoped_tokens;
        assert_eq!(
            (shown[0].token.as_str(), shown[0].read_only),
            ("(set)", true)
        );
    });
}

#[test]
fn object_journal_keys_are_checked_and_resolved() {
    jailed(|_| {
        let base = "[default]\ndata_dir = \"d\"\n";
        let (err, file) = load_err(
            &format!("{base}[default.journal]\nkind = \"object\"\nurl = \"gs://b/p\"\n"),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("journal.url"), "{err}");
        assert!(err.to_string().contains("gs://b/p") && err.to_string().contains(&file));
        let (err, _) = load_err(
            &format!("{base}[default.journal]\nkind = \"file\"\nendpoint = \"http://h:1\"\n"),
            "default",
        );
        assert_eq!(err.key.as_deref(), Some("journal.endpoint"), "{err}");
        let (err, _) = load_err(
            &format!("{base}[default.journal]\nkind = \"object\"\nmax_object_bytes = 0\n"),
            "default",
        );
        assert_eq!(
            err.key.as_deref(),
            Some("journal.max_object_bytes"),
            "{err}"
        );
        for bad in ["0", "9"] {
            let (err, _) = load_err(
                &format!("{base}[default.journal]\nkind = \"object\"\ncommits_in_flight = {bad}\n"),
                "default",
            );
            assert_eq!(
                err.key.as_deref(),
                Some("journal.commits_in_flight"),
                "{err}"
            );
            assert!(err.to_string().contains("from 1 to 8"), "{err}");
        }
        let (err, _) = load_err(
            &format!("{base}[default.journal]\nkind = \"file\"\ncommits_in_flight = 2\n"),
            "default",
        );
        assert_eq!(
            err.key.as_deref(),
            Some("journal.commits_in_flight"),
            "{err}"
        );
        let c = Config::from_toml_str(
            &format!(
                "{base}[default.journal]\nkind = \"object\"\nurl = \"s3://b/wal\"\n\
                 endpoint = \"http://127.0.0.1:9000\"\nallow_http = true\ncommit_delay_ms = 3\n\
                 secret_access_key = \"hush\"\n"
            ),
            None,
        )
        .unwrap();
        let o = c.object_journal_options();
        assert_eq!(o.commit_delay, std::time::Duration::from_millis(3));
        let store = c.journal_store_options();
        assert!(store.allow_http && store.url == "s3://b/wal");
        let r = c.resolved();
        assert_eq!(r.journal.retry_for_ms, Some(30_000));
        assert_eq!(r.journal.secret_access_key.as_deref(), Some("(set)"));
        // Without a url, the objects go under the data directory.
        let c = Config::from_toml_str(
            &format!("{base}[default.journal]\nkind = \"object\"\n"),
            None,
        )
        .unwrap();
        let url = c.journal_store_options().url;
        assert!(
            url.starts_with("file://") && url.ends_with("d/journal-objects"),
            "{url}"
        );
    });
}

fn router_config(router: &str, extra: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(
        &format!("[default]\ndata_dir = \"/d\"\n{extra}\n[default.router]\n{router}\n"),
        None,
    )
}

#[test]
fn router_sections_are_checked_key_by_key() {
    jailed(|_| {
        let c = router_config(
            "shards = [{ kind = \"local\" }, { kind = \"grpc\", url = \"http://h:1\", timeout_ms = 50 }]",
            "",
        )
        .unwrap();
        let r = c.router.as_ref().unwrap();
        assert_eq!(r.shards[1].kind, ShardKind::Grpc);
        assert_eq!(r.shards[1].timeout_ms, Some(50));
        assert_eq!(
            c.resolved().router.unwrap().import_table_bytes,
            Some(cairn_router::IMPORT_TABLE_BYTES)
        );

        for (router, extra, key, why) in [
            ("shards = []", "", "router.shards", "at least one shard"),
            (
                "shards = [{ kind = \"local\", url = \"http://h:1\" }]",
                "",
                "router.shards[0].url",
                "does not apply to a local shard",
            ),
            (
                "shards = [{ kind = \"local\" }, { kind = \"grpc\" }]",
                "",
                "router.shards[1].url",
                "needs its server's url",
            ),
            (
                "shards = [{ kind = \"grpc\", url = \"h:1\" }]",
                "",
                "router.shards[0].url",
                "is not http://host:port",
            ),
            (
                "shards = [{ kind = \"local\", replicas = [\"http://r:1\", \"r:2\"] }]",
                "",
                "router.shards[0].replicas[1]",
                "is not http://host:port",
            ),
            (
                "shards = [{ kind = \"local\" }]\nimport_table_bytes = 0",
                "",
                "router.import_table_bytes",
                "greater than 0",
            ),
        ] {
            let e = router_config(router, extra).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{router}: {e}");
            assert!(e.message.contains(why), "{router}: {e}");
        }
        let e = router_config("shards = [{ kind = \"remote\" }]", "").unwrap_err();
        assert!(e.message.contains("router.shards"), "{e}");
        let e = router_config("shard = []", "").unwrap_err();
        assert!(e.message.contains("router.shard"), "{e}");
        // Local shards share one compaction server, each naming its own database there.
        let c = router_config(
            "shards = [{ kind = \"local\" }, { kind = \"local\" }]",
            "[default.compaction]\nkind = \"grpc\"\nurl = \"http://c:1\"",
        )
        .unwrap();
        assert_eq!(
            c.shard_config(1).compaction.database.as_deref(),
            Some("shard-1")
        );
        // One local shard may use remote components: it is the only engine using them.
        router_config(
            "shards = [{ kind = \"local\" }, { kind = \"grpc\", url = \"http://h:1\" }]",
            "[default.journal]\nkind = \"grpc\"\nurl = \"http://j:1\"",
        )
        .unwrap();
    });
}

#[test]
fn each_local_shard_gets_its_own_directories_and_prefixes() {
    jailed(|_| {
        let c = router_config(
            "shards = [{ kind = \"local\" }, { kind = \"local\" }]",
            "[default.journal]\ndir = \"/j\"\n[default.storage]\nkind = \"hybrid\"\n\
             [default.storage.primary]\nkind = \"sstable\"\ndir = \"/t\"\n\
             [default.storage.secondary]\nkind = \"parquet\"\nurl = \"s3://b/p/\"",
        )
        .unwrap();
        let s = c.shard_config(1);
        assert_eq!(s.router, None);
        assert_eq!(s.data_dir, PathBuf::from("/d/shard-1"));
        assert_eq!(s.journal.dir, Some(PathBuf::from("/j/shard-1")));
        let storage = &s.storage;
        assert_eq!(
            storage.primary.as_ref().unwrap().dir,
            Some(PathBuf::from("/t/shard-1"))
        );
        assert_eq!(
            storage.secondary.as_ref().unwrap().url.as_deref(),
            Some("s3://b/p/shard-1")
        );
    });
}

/// Local shards of the serverless layout each get their own object journal: sharing one,
/// the second shard's claim would fence the first (issue 28, item 4).
#[test]
fn each_local_shard_gets_its_own_object_journal() {
    jailed(|_| {
        let c = router_config(
            "shards = [{ kind = \"local\" }, { kind = \"local\" }]",
            "[default.journal]\nkind = \"object\"\nurl = \"s3://cairn/journal\"",
        )
        .unwrap();
        let urls: Vec<_> = (0..2).map(|i| c.shard_config(i).journal.url).collect();
        assert_eq!(
            urls,
            vec![
                Some("s3://cairn/journal/shard-0".to_string()),
                Some("s3://cairn/journal/shard-1".to_string())
            ]
        );
    });
}

/// `config show` prints the directories the engine uses: a hybrid store's secondary
/// SSTables live in `<data_dir>/secondary`, not beside the primary in `<data_dir>/tables`
/// (copied into a config, that put both halves in one directory; issue 28, item 5).
#[test]
fn config_show_names_the_secondary_directory_the_engine_uses() {
    let c = Config::from_toml_str(
        "[default]\ndata_dir = \"/d\"\n[default.storage]\nkind = \"hybrid\"\n\
         [default.storage.primary]\nkind = \"sstable\"\n\
         [default.storage.secondary]\nkind = \"sstable\"\n",
        None,
    )
    .unwrap();
    let r = c.resolved().storage;
    assert_eq!(r.primary.unwrap().dir, Some(PathBuf::from("/d/tables")));
    assert_eq!(
        r.secondary.unwrap().dir,
        Some(PathBuf::from("/d/secondary"))
    );
}

#[test]
fn the_shipped_sharded_and_cluster_profiles_load() {
    jailed(|_| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml");
        let c = Config::load(&path, Some("sharded")).unwrap();
        let r = c.router.unwrap();
        assert_eq!(r.shards.len(), 3);
        assert_eq!(r.local_count(), 3);
        let c = Config::load(&path, Some("cluster")).unwrap();
        let urls: Vec<_> = c
            .router
            .unwrap()
            .shards
            .iter()
            .map(|s| s.url.clone())
            .collect();
        assert_eq!(
            urls,
            [
                None,
                Some("http://127.0.0.1:10011".to_string()),
                Some("http://127.0.0.1:10012".to_string())
            ]
        );
        assert!(
            Config::load(&path, Some("default"))
                .unwrap()
                .router
                .is_none()
        );
    });
}

/// A `[cluster]` profile needs a journal and tables every node reaches; each bad key is
/// named with the file, and the shipped `elastic` profile loads.
#[test]
fn a_cluster_section_is_checked() {
    jailed(|_| {
        let shared = "[default]\ndata_dir = \"d\"\n[default.journal]\nkind = \"object\"\n\
                      url = \"file:///tmp/j\"\n[default.storage]\ndir = \"/tmp/t\"\n";
        let (_d, path) = write(&format!("{shared}[default.cluster]\nshards = 3\n"));
        let c = Config::load(&path, None).unwrap();
        let cluster = c.cluster.as_ref().unwrap();
        assert_eq!(cluster.map, MapKind::Storage);
        assert_eq!(cluster.lease(), std::time::Duration::from_millis(3000));
        for (text, key) in [
            (
                "[default]\ndata_dir = \"d\"\n[default.storage]\ndir = \"/tmp/t\"\n[default.cluster]\n",
                "journal.kind",
            ),
            (
                "[default]\ndata_dir = \"d\"\n[default.journal]\nkind = \"object\"\n[default.storage]\ndir = \"/tmp/t\"\n[default.cluster]\n",
                "journal.url",
            ),
            (
                "[default]\ndata_dir = \"d\"\n[default.journal]\nkind = \"object\"\nurl = \"file:///tmp/j\"\n[default.cluster]\n",
                "storage.dir",
            ),
            (
                &format!("{shared}[default.cluster]\nmap = \"etcd\"\n"),
                "cluster.etcd",
            ),
            (
                &format!("{shared}[default.cluster]\netcd = [\"http://e:2379\"]\n"),
                "cluster.etcd",
            ),
            (
                &format!("{shared}[default.cluster]\nlease_ms = 5\n"),
                "cluster.lease_ms",
            ),
            (
                &format!("{shared}[default.cluster]\nshards = 0\n"),
                "cluster.shards",
            ),
            (
                &format!("{shared}[default.cluster]\nnode = \"a/b\"\n"),
                "cluster.node",
            ),
            (
                &format!("{shared}[default.cluster]\nleases = 1\n"),
                "cluster.leases",
            ),
            (
                &format!(
                    "{shared}[default.cluster]\n[default.router]\nshards = [{{ kind = \"local\" }}]\n"
                ),
                "cluster",
            ),
        ] {
            let (err, file) = load_err(text, "default");
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert!(err.to_string().contains(&file), "{err}");
        }
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn.toml");
        let elastic = Config::load(&shipped, Some("elastic")).unwrap();
        assert!(elastic.cluster.is_some());
    });
}
