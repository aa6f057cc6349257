//! `dbsync dump`: an archive directory from one snapshot, complete or absent; `dbsync restore`:
//! an archive back into a database, checked first and validated after.

use std::path::Path;
use std::process::Command;

use crate::harness::fakes::FakeTools;
use crate::harness::{Cluster, clusters};
use crate::{
    assert_exit, assert_previous_target_intact, dump_command, dump_dir, fingerprint, is_empty_dir, precious_target,
    restore_command, rich_source, text,
};

/// Restores an archive by hand with pg_restore, in the order the README gives.
fn restore_by_hand(cluster: &Cluster, archive: &Path, database: &str) {
    cluster.create_database(database);
    let pg_restore = |arguments: &[&str], file: &Path| {
        let output = Command::new(cluster.bin_dir.join("pg_restore"))
            .arg("-h")
            .arg(&cluster.socket_dir)
            .args(["-p", &cluster.port.to_string(), "-U", "postgres", "-d", database])
            .args(arguments)
            .arg(file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    pg_restore(&["--section=pre-data"], &archive.join("schema.dump"));
    let mut units: Vec<_> = std::fs::read_dir(archive)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("unit-"))
        .collect();
    units.sort();
    let manifest: serde_json::Value = crate::manifest_json(archive);
    for unit in units {
        match ["rows.copy.gz", "rows.copy"]
            .iter()
            .find(|name| unit.join(name).exists())
        {
            Some(rows) => load_part_by_hand(cluster, database, &manifest, &unit, rows),
            None => pg_restore(&["--data-only"], &unit),
        }
    }
    pg_restore(&["--section=post-data"], &archive.join("schema.dump"));
}

/// A part's rows with psql's `\copy`, its columns and format from the manifest's
/// `restore.plan.units[].part`, then the sequences it sets from its `sequences.json`: what the
/// dump-and-restore guide says to do.
fn load_part_by_hand(cluster: &Cluster, database: &str, manifest: &serde_json::Value, unit: &Path, rows: &str) {
    let quoted = |identifier: &serde_json::Value| format!("\"{}\"", identifier.as_str().unwrap().replace('"', "\"\""));
    let qualified = |name: &serde_json::Value| format!("{}.{}", quoted(&name["schema"]), quoted(&name["name"]));
    let number: usize = unit.file_name().unwrap().to_string_lossy()["unit-".len()..]
        .parse()
        .unwrap();
    let planned = manifest["restore"]["plan"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|planned| planned["index"] == number - 1)
        .expect("the unit is in the manifest");
    let part = &planned["part"];
    let columns: Vec<String> = part["columns"].as_array().unwrap().iter().map(quoted).collect();
    let format = if part["binary"] == true { "binary" } else { "text" };
    let path = unit.join(rows).display().to_string().replace('\'', "''");
    let source = match rows.ends_with(".gz") {
        true => format!("PROGRAM 'gunzip -c {path}'"),
        false => format!("'{path}'"),
    };
    cluster.psql(
        database,
        &format!(
            "\\copy {} ({}) FROM {source} (FORMAT {format})",
            qualified(&planned["tables"][0]),
            columns.join(", ")
        ),
    );
    let values: Vec<Option<(i64, bool)>> =
        serde_json::from_str(&std::fs::read_to_string(unit.join("sequences.json")).unwrap()).unwrap();
    for (sequence, value) in part["sequences"].as_array().unwrap().iter().zip(values) {
        if let Some((value, called)) = value {
            let name = qualified(sequence).replace('\'', "''");
            cluster.psql(database, &format!("SELECT setval('{name}', {value}, {called})"));
        }
    }
}

#[test]
fn a_dump_is_a_complete_checked_archive_that_pg_restore_turns_back_into_the_source() {
    let clusters = clusters();
    rich_source("dumped_src");
    let parent = dump_dir();
    let output = parent.path().join("nightly");
    let run = dump_command("dumped_src", &output)
        .args(["--jobs", "2"])
        .output()
        .unwrap();
    assert_exit(&run, 0);
    let log = text(&run);
    assert!(log.contains("Archive complete:"), "{log}");
    assert!(log.contains("✅ Dump finished successfully."), "{log}");
    // Only the archive, under its own name: no partial directory beside it.
    let entries: Vec<String> = std::fs::read_dir(parent.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["nightly"]);
    assert!(!output.join(".dbsync-run").exists());

    let manifest = dbsync::manifest::Manifest::verify(&output, 2).unwrap();
    assert_eq!(manifest.source.database, "dumped_src");
    assert!(manifest.large_objects > 0);
    // Each table's rows (with its partitions or children), as counted in the snapshot; the
    // source is not written meanwhile, so a count now is the same.
    assert!(manifest.tables.len() >= 15, "{:?}", manifest.tables);
    for table in &manifest.tables {
        let quoted = |identifier: &str| format!("\"{}\"", identifier.replace('"', "\"\""));
        let rows = clusters.source.psql(
            "dumped_src",
            &format!("SELECT count(*) FROM {}.{}", quoted(&table.schema), quoted(&table.name)),
        );
        assert_eq!(rows, table.rows.to_string(), "{}.{}", table.schema, table.name);
    }
    restore_by_hand(&clusters.target, &output, "dumped_by_hand");
    crate::assert_same_copy("dumped_src", "dumped_by_hand");

    // An existing directory is never written into.
    let again = dump_command("dumped_src", &output).output().unwrap();
    assert_exit(&again, 2);
    assert!(text(&again).contains("exists already"), "{}", text(&again));
    dbsync::manifest::Manifest::verify(&output, 2).unwrap();
}

#[test]
fn an_archive_with_a_masked_table_is_restored_by_hand_as_the_guide_says() {
    // A masked table is dumped by dbsync's own COPY (rows.copy.gz, and sequences.json for the
    // identity it owns), which pg_restore does not read: the guide's psql steps bring it back,
    // to the same database `dbsync restore` makes of the archive.
    let clusters = clusters();
    rich_source("parted_src");
    let parent = dump_dir();
    let config = parent.path().join("mask.toml");
    std::fs::write(&config, "[transform.customers]\nnote = \"null\"\n").unwrap();
    let output = parent.path().join("parted");
    let run = dump_command("parted_src", &output)
        .args(["--jobs", "2", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_exit(&run, 0);
    assert!(output.join("unit-0001").exists());
    let manifest: serde_json::Value = crate::manifest_json(&output);
    let parts = manifest["restore"]["plan"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|unit| !unit["part"].is_null())
        .count();
    assert_eq!(parts, 1, "the masked table is one part:\n{}", text(&run));
    restore_by_hand(&clusters.target, &output, "parted_by_hand");
    let restored = restore_command(&output, "parted_restored").output().unwrap();
    assert_exit(&restored, 0);
    let target = &clusters.target;
    // Rows, sequences and large objects (database settings and comment are dbsync restore's own).
    let (by_hand, restored) = (
        fingerprint(target, "parted_by_hand"),
        fingerprint(target, "parted_restored"),
    );
    assert_eq!(by_hand.tables, restored.tables);
    assert_eq!(by_hand.sequences, restored.sequences);
    assert_eq!(by_hand.large_objects, restored.large_objects);
    assert_eq!(
        target.schema_dump("parted_by_hand"),
        target.schema_dump("parted_restored")
    );
    assert_eq!(
        target.psql(
            "parted_by_hand",
            "SELECT count(*) FILTER (WHERE note IS NULL) || ' of ' || count(*) FROM customers"
        ),
        "500 of 500"
    );
}

#[test]
fn a_failed_dump_leaves_no_archive_and_no_partial_directory() {
    let clusters = clusters();
    clusters.source.create_database("dumpfail_src");
    clusters.source.psql(
        "dumpfail_src",
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 100); \
         CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b SELECT generate_series(1, 100);",
    );
    // Data dumps fail; the schema dump works.
    let fakes = FakeTools::new(
        "if [[ \" $* \" == *\" --data-only \"* ]]; then echo 'pg_dump: error: permission denied for table b' >&2; exit 1; fi",
        "",
    );
    let parent = dump_dir();
    let output = parent.path().join("archive");
    let run = dump_command("dumpfail_src", &output)
        .arg("--pg-bin")
        .arg(fakes.bin())
        .output()
        .unwrap();
    assert_exit(&run, 1);
    assert!(text(&run).contains("permission denied for table b"), "{}", text(&run));
    assert!(
        is_empty_dir(parent.path()),
        "something was left in {}",
        parent.path().display()
    );

    // A link to nowhere at the output path: refused before anything is written.
    let link = parent.path().join("link");
    std::os::unix::fs::symlink("/nowhere/at/all", &link).unwrap();
    let refused = dump_command("dumpfail_src", &link).output().unwrap();
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("is a symbolic link (to /nowhere/at/all)"),
        "{}",
        text(&refused)
    );
    let left: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(left, ["link"], "something was left beside the link");

    // One that appears while the dump runs: the dump fails and leaves nothing of its own.
    std::fs::remove_file(&link).unwrap();
    let linking = FakeTools::new(
        "if [[ \" $* \" == *\" --section=pre-data \"* ]]; then ln -s /nowhere/at/all \"$DBSYNC_TEST_LINK\"; fi",
        "",
    );
    let raced = dump_command("dumpfail_src", &link)
        .arg("--pg-bin")
        .arg(linking.bin())
        .env("DBSYNC_TEST_LINK", &link)
        .output()
        .unwrap();
    assert_exit(&raced, 1);
    assert!(text(&raced).contains("appeared while the dump ran"), "{}", text(&raced));
    let left: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(left, ["link"], "the partial dump was left beside the link");
}

#[test]
fn dated_dumps_with_retain_keep_the_newest_complete_archives() {
    let clusters = clusters();
    clusters.source.create_database("dumpdated_src");
    clusters
        .source
        .psql("dumpdated_src", "CREATE TABLE a (id int); INSERT INTO a VALUES (1)");
    let parent = dump_dir();
    // An old archive of the template (a real one of this source), a look-alike without a
    // manifest, look-alikes whose manifest is not dbsync's or is another database's, and another
    // name.
    let old = parent.path().join("main_20200101_000000");
    assert_exit(&dump_command("dumpdated_src", &old).output().unwrap(), 0);
    let unfinished = parent.path().join("main_20200102_000000");
    let foreign = parent.path().join("main_20200103_000000");
    let another_database = parent.path().join("main_20200104_000000");
    let other = parent.path().join("main_latest");
    for directory in [&unfinished, &foreign, &another_database, &other] {
        std::fs::create_dir(directory).unwrap();
    }
    std::fs::write(foreign.join("manifest.json"), "{\"photos\": 12}").unwrap();
    let real = std::fs::read_to_string(old.join("manifest.json")).unwrap();
    // Another database: another name, and another server identity and database OID.
    let mut elsewhere: serde_json::Value =
        serde_json::from_str(&real.replace("dumpdated_src", "someone_elses_db")).unwrap();
    assert!(elsewhere["source"]["identity"].is_string(), "{real}");
    elsewhere["source"]["identity"] = "1/1".into();
    std::fs::write(another_database.join("manifest.json"), elsewhere.to_string()).unwrap();
    let template = parent.path().join("main_{date:%Y%m%d_%H%M%S}");
    let mut made = Vec::new();
    let complete = regex::Regex::new(r"Archive complete: (\S+main_\d{8}_\d{6}) ").unwrap();
    for _ in 0..3 {
        crate::archives::next_second();
        let run = dump_command("dumpdated_src", &template)
            .args(["--retain", "2"])
            .output()
            .unwrap();
        assert_exit(&run, 0);
        let log = text(&run);
        let name = complete.captures(&log).unwrap_or_else(|| panic!("{log}"))[1].to_string();
        made.push(name);
    }
    let mut left: Vec<String> = std::fs::read_dir(parent.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.path().display().to_string())
        .collect();
    left.sort();
    let mut expected = vec![
        made[1].clone(),
        made[2].clone(),
        unfinished.display().to_string(),
        foreign.display().to_string(),
        another_database.display().to_string(),
        other.display().to_string(),
    ];
    expected.sort();
    assert_eq!(left, expected);
}

#[test]
fn a_killed_dump_leaves_a_partial_directory_that_the_next_dump_removes() {
    let clusters = clusters();
    clusters.source.create_database("dumpkill_src");
    clusters
        .source
        .psql("dumpkill_src", "CREATE TABLE a (id int); INSERT INTO a VALUES (1)");
    let fakes = FakeTools::new(
        "if [[ \" $* \" == *\" --data-only \"* ]]; then touch \"$STATE/dumping\"; sleep 60; fi",
        "",
    );
    let parent = dump_dir();
    let output = parent.path().join("archive");
    let mut child = dump_command("dumpkill_src", &output)
        .arg("--pg-bin")
        .arg(fakes.bin())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !fakes.state("dumping").exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the data dump never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(partial.len(), 1, "{partial:?}");
    assert!(
        partial[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".archive.partial-")
    );
    assert!(!output.exists(), "a killed dump has the archive's name");

    let run = dump_command("dumpkill_src", &output).output().unwrap();
    assert_exit(&run, 0);
    assert!(
        text(&run).contains(&format!(
            "Removed {}, a dump directory left by a run that died",
            partial[0].display()
        )),
        "{}",
        text(&run)
    );
    assert!(!partial[0].exists());
    dbsync::manifest::Manifest::verify(&output, 1).unwrap();
}

#[test]
fn dump_then_restore_equals_a_direct_sync() {
    let clusters = clusters();
    rich_source("roundtrip_src");
    let parent = dump_dir();
    let archive = parent.path().join("archive");
    assert_exit(&dump_command("roundtrip_src", &archive).output().unwrap(), 0);
    let work = dump_dir();
    let restored = restore_command(&archive, "roundtrip_restored")
        .arg("--dump-dir")
        .arg(work.path())
        .output()
        .unwrap();
    assert_exit(&restored, 0);
    let log = text(&restored);
    assert!(log.contains("✅ Validation Successful."), "{log}");
    assert!(log.contains("✅ Restore finished successfully."), "{log}");
    let direct = crate::sync("roundtrip_src", "roundtrip_direct", &["--yes"], work.path());
    assert_exit(&direct, 0);

    let restored = fingerprint(&clusters.target, "roundtrip_restored");
    let direct = fingerprint(&clusters.target, "roundtrip_direct");
    assert_eq!(restored, direct, "the restored copy differs from a direct sync");
    assert_eq!(
        clusters.target.schema_dump("roundtrip_restored"),
        clusters.target.schema_dump("roundtrip_direct"),
        "the schema differs"
    );
    // The archive is as it was (nothing loaded was removed, nothing written into it), and the
    // restore's working directory is gone.
    dbsync::manifest::Manifest::verify(&archive, 2).unwrap();
    assert!(
        is_empty_dir(work.path()),
        "working files left in {}",
        work.path().display()
    );
}

#[test]
fn an_altered_or_unfinished_archive_is_refused_by_file_and_the_target_kept() {
    clusters().source.create_database("altered_src");
    clusters().source.psql(
        "altered_src",
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 500)",
    );
    precious_target("altered_dst");
    let parent = dump_dir();
    let archive = parent.path().join("archive");
    assert_exit(&dump_command("altered_src", &archive).output().unwrap(), 0);

    // One byte of a data file changed.
    let data_file = std::fs::read_dir(archive.join("unit-0001"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.contains(".dat") && name != "toc.dat"
        })
        .expect("a data file");
    let original = std::fs::read(&data_file).unwrap();
    let mut altered = original.clone();
    altered[0] ^= 1;
    std::fs::write(&data_file, &altered).unwrap();
    let refused = restore_command(&archive, "altered_dst").output().unwrap();
    assert_exit(&refused, 2);
    let name = data_file.strip_prefix(&archive).unwrap().display().to_string();
    assert!(
        text(&refused).contains(&format!("{name} does not match its checksum")),
        "{}",
        text(&refused)
    );
    assert_previous_target_intact("altered_dst");

    // Truncated.
    std::fs::write(&data_file, &original[..original.len() / 2]).unwrap();
    let refused = restore_command(&archive, "altered_dst").output().unwrap();
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("the archive is truncated or altered"),
        "{}",
        text(&refused)
    );
    std::fs::write(&data_file, &original).unwrap();

    // Without its manifest: not a finished archive.
    std::fs::rename(archive.join("manifest.json"), parent.path().join("manifest.json")).unwrap();
    let refused = restore_command(&archive, "altered_dst").output().unwrap();
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("is not a complete dbsync archive"),
        "{}",
        text(&refused)
    );
    assert_previous_target_intact("altered_dst");

    // Put back as written, it restores.
    std::fs::rename(parent.path().join("manifest.json"), archive.join("manifest.json")).unwrap();
    let restored = restore_command(&archive, "altered_dst").output().unwrap();
    assert_exit(&restored, 0);
    assert_eq!(clusters().target.psql("altered_dst", "SELECT count(*) FROM a"), "500");
}

#[test]
fn a_syncs_kept_dumps_restore_like_an_archive() {
    rich_source("keptarchive_src");
    let kept = dump_dir();
    let output = crate::sync(
        "keptarchive_src",
        "keptarchive_direct",
        &["--yes", "--keep-dumps"],
        kept.path(),
    );
    assert_exit(&output, 0);
    let archive = std::fs::read_dir(kept.path()).unwrap().flatten().next().unwrap().path();
    let restored = restore_command(&archive, "keptarchive_restored").output().unwrap();
    assert_exit(&restored, 0);
    assert_eq!(
        fingerprint(&clusters().target, "keptarchive_restored"),
        fingerprint(&clusters().target, "keptarchive_direct")
    );
}

/// What `strace -y` saw of a run: each `fsync` by path, and each rename, in order.
enum FileEvent {
    Synced(String),
    Renamed { to: String },
}

fn file_events(trace: &str) -> Vec<FileEvent> {
    let quoted = regex::Regex::new(r#""([^"]*)""#).unwrap();
    let synced = regex::Regex::new(r"fsync\(\d+<([^>]*)>\) = 0").unwrap();
    trace
        .lines()
        .filter_map(|line| {
            if let Some(found) = synced.captures(line) {
                return Some(FileEvent::Synced(found[1].to_string()));
            }
            if line.contains("rename") && line.ends_with("= 0") {
                let paths: Vec<String> = quoted.captures_iter(line).map(|found| found[1].to_string()).collect();
                if let [_, to] = paths.as_slice() {
                    return Some(FileEvent::Renamed { to: to.clone() });
                }
            }
            None
        })
        .collect()
}

/// Every file and directory under `root`, relative to it ("" for `root` itself).
fn everything_under(root: &Path) -> Vec<String> {
    let mut found = vec![String::new()];
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).unwrap().flatten() {
            let relative = entry.path().strip_prefix(root).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            }
            found.push(relative);
        }
    }
    found
}

#[test]
fn an_archive_is_compressed_as_asked_and_on_disk_before_its_manifest_names_it() {
    let clusters = clusters();
    clusters.source.create_database("squeezed_src");
    clusters.source.psql(
        "squeezed_src",
        "CREATE TABLE readings (id bigint PRIMARY KEY, sensor text NOT NULL, value numeric NOT NULL); \
         INSERT INTO readings SELECT g, 'sensor ' || (g % 50), g / 7.0 FROM generate_series(1, 40000) g; \
         CREATE TABLE notes (id int PRIMARY KEY, reading bigint REFERENCES readings, body text); \
         INSERT INTO notes SELECT g, g, repeat('note ', g % 20) FROM generate_series(1, 2000) g;",
    );
    let parent = dump_dir();
    // readings is cut into parts: rows files that dbsync writes itself, beside pg_dump's.
    let config = parent.path().join("dbsync.toml");
    std::fs::write(&config, "[options]\nsplit_larger_than = \"256kB\"\n").unwrap();
    let output = parent.path().join("nightly");
    let trace = parent.path().join("trace");
    let run = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,rename,renameat,renameat2", "-o"])
        .arg(&trace)
        .arg(dump_command("squeezed_src", &output).get_program())
        .args(dump_command("squeezed_src", &output).get_args())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_exit(&run, 0);
    std::fs::remove_file(&config).unwrap();

    // Compressed by default, pg_dump's files and dbsync's own alike.
    let manifest = dbsync::manifest::Manifest::verify(&output, 2).unwrap();
    assert_eq!(manifest.restore.compression.as_deref(), Some("gzip"));
    let names: Vec<String> = manifest.files.iter().map(|file| file.path.clone()).collect();
    let data: Vec<&String> = names
        .iter()
        .filter(|name| name.contains(".dat") && !name.ends_with("toc.dat"))
        .collect();
    let rows: Vec<&String> = names.iter().filter(|name| name.contains("rows.copy")).collect();
    assert!(
        !data.is_empty() && data.iter().all(|name| name.ends_with(".dat.gz")),
        "{names:?}"
    );
    assert!(
        rows.len() >= 2 && rows.iter().all(|name| name.ends_with("rows.copy.gz")),
        "{names:?}"
    );

    // Every file and directory of the archive was synced before the manifest was renamed into
    // place, the manifest and its directory after, and the archive's parent after it got its name.
    let events = file_events(&std::fs::read_to_string(&trace).unwrap());
    let manifest_named = events
        .iter()
        .position(|event| matches!(event, FileEvent::Renamed { to, .. } if to.ends_with("/manifest.json")))
        .expect("the manifest was renamed into place");
    let FileEvent::Renamed { to, .. } = &events[manifest_named] else {
        unreachable!()
    };
    let partial = Path::new(to).parent().unwrap().to_path_buf();
    let synced_before: std::collections::HashSet<&str> = events[..manifest_named]
        .iter()
        .filter_map(|event| match event {
            FileEvent::Synced(path) => Some(path.as_str()),
            FileEvent::Renamed { .. } => None,
        })
        .collect();
    for relative in everything_under(&output) {
        if relative == "manifest.json" {
            continue;
        }
        let path = if relative.is_empty() {
            partial.clone()
        } else {
            partial.join(&relative)
        };
        assert!(
            synced_before.contains(path.to_str().unwrap()),
            "{} was not synced before the manifest named it",
            path.display()
        );
    }
    let after = &events[manifest_named..];
    let synced_after = |path: &Path| {
        after
            .iter()
            .any(|event| matches!(event, FileEvent::Synced(synced) if Path::new(synced) == path))
    };
    assert!(
        synced_after(&partial),
        "the manifest's directory was not synced after its rename"
    );
    let published = after
        .iter()
        .position(|event| matches!(event, FileEvent::Renamed { to, .. } if Path::new(to) == output))
        .expect("the archive was renamed to --output");
    assert!(
        after[published..]
            .iter()
            .any(|event| matches!(event, FileEvent::Synced(synced) if Path::new(synced) == parent.path())),
        "the output's parent was not synced after the archive got its name"
    );

    // (pg_restore by hand restores a compressed archive too: the first test of this file.)
    assert_exit(&restore_command(&output, "squeezed_restored").output().unwrap(), 0);
    crate::assert_same_copy("squeezed_src", "squeezed_restored");

    // Uncompressed when asked: the same files, without suffixes, larger.
    let plain = parent.path().join("plain");
    let run = dump_command("squeezed_src", &plain)
        .args(["--compress", "none"])
        .output()
        .unwrap();
    assert_exit(&run, 0);
    let plain_manifest = dbsync::manifest::Manifest::verify(&plain, 2).unwrap();
    assert!(plain_manifest.files.iter().all(|file| !file.path.ends_with(".gz")));
    let size = |manifest: &dbsync::manifest::Manifest| manifest.files.iter().map(|file| file.bytes).sum::<u64>();
    assert!(
        size(&plain_manifest) > 3 * size(&manifest),
        "{} vs {}",
        size(&plain_manifest),
        size(&manifest)
    );
    assert_exit(&restore_command(&plain, "squeezed_plain").output().unwrap(), 0);
    crate::assert_same_copy("squeezed_src", "squeezed_plain");
}

#[test]
fn a_compression_the_tools_cannot_write_is_refused_before_anything_is_written() {
    clusters().source.create_database("unsqueezed_src");
    clusters()
        .source
        .psql("unsqueezed_src", "CREATE TABLE a (id int PRIMARY KEY)");
    let parent = dump_dir();
    let output = parent.path().join("archive");
    let cases: [(&[&str], &str); 3] = [
        (&["--compress", "zstd"], "--compress zstd needs pg_dump 16 or newer"),
        (
            &["--compress", "brotli"],
            "is not a compression: use none, gzip, lz4 or zstd",
        ),
        (&["--compress", "gzip:12"], "the level of gzip is a number from 1 to 9"),
    ];
    for (arguments, message) in cases {
        let refused = dump_command("unsqueezed_src", &output)
            .args(arguments)
            .output()
            .unwrap();
        assert_exit(&refused, 2);
        assert!(text(&refused).contains(message), "{arguments:?}: {}", text(&refused));
        assert!(is_empty_dir(parent.path()), "{arguments:?} left something behind");
    }
    // A sync compresses only what it keeps: without --keep-dumps the flag is refused, not ignored.
    let refused = crate::sync(
        "unsqueezed_src",
        "unsqueezed_dst",
        &["--compress", "gzip"],
        parent.path(),
    );
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("--compress applies to what is kept"),
        "{}",
        text(&refused)
    );
    assert!(!clusters().target.database_exists("unsqueezed_dst"));
}

#[test]
fn restoring_what_is_not_a_dbsync_archive_says_what_it_is_and_what_reads_it() {
    let clusters = clusters();
    clusters.source.create_database("foreign_src");
    clusters
        .source
        .psql("foreign_src", "CREATE TABLE a (id int PRIMARY KEY)");
    precious_target("foreign_dst");
    let parent = dump_dir();
    let pg_dump = |format: &str, path: &Path| {
        let output = Command::new(clusters.source.bin_dir.join("pg_dump"))
            .arg("-h")
            .arg(&clusters.source.socket_dir)
            .args(["-p", &clusters.source.port.to_string(), "-U", "postgres", format, "-f"])
            .arg(path)
            .arg("foreign_src")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let custom = parent.path().join("shop.pgdump");
    pg_dump("-Fc", &custom);
    let plain = parent.path().join("shop.sql");
    pg_dump("-Fp", &plain);
    let directory = parent.path().join("shop.dir");
    pg_dump("-Fd", &directory);
    let cases = [
        (
            custom,
            "is a pg_dump custom-format archive (pg_dump -Fc): restore it with pg_restore",
        ),
        (plain, "is an SQL script (pg_dump's plain format): run it with psql"),
        (directory, "is a pg_dump directory-format archive, not a dbsync archive"),
        (parent.path().join("nothing"), "does not exist"),
    ];
    for (path, message) in cases {
        let refused = restore_command(&path, "foreign_dst").output().unwrap();
        assert_exit(&refused, 2);
        assert!(
            text(&refused).contains(message),
            "{}: {}",
            path.display(),
            text(&refused)
        );
        assert_previous_target_intact("foreign_dst");
    }
}
