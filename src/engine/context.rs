//! What every mode of a run shares. For now: the number of sessions the servers granted, the one
//! number anything that opens sessions may use.

use crate::errors::SyncError;
use crate::report::Warning;
use crate::settings::Jobs;

/// Sessions dbsync opens besides those of `--jobs`: on the source the progress monitor (the
/// snapshot session is already open, so counted as taken); on the target the maintenance
/// session (open too), the validation count and the progress monitor.
const OWN_SOURCE_SESSIONS: i64 = 1;
const OWN_TARGET_SESSIONS: i64 = 2;

/// `--jobs` as the servers granted it: lowered to the connection slots both can spare. Only
/// `GrantedJobs::grant` makes one, so every step that opens sessions (loads, index builds,
/// checksums, `verify`, refreshes, incremental, merge, dump) is given this number and never the
/// one the user asked for, which can be far more than a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantedJobs(Jobs);

/// The connection slots a server can spare, from `catalog::free_connection_slots`; `None` for a
/// side the run does not connect to (a dump has no target, a restore no source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSlots {
    pub source: Option<i64>,
    pub target: Option<i64>,
}

impl GrantedJobs {
    /// `wanted`, lowered to what the servers can give so that dbsync never takes the connection
    /// slots other clients need (with a warning saying so); an error when they cannot give one.
    pub fn grant(wanted: Jobs, free: FreeSlots) -> Result<(GrantedJobs, Option<Warning>), SyncError> {
        let allowed = [
            free.source.map(|slots| slots - OWN_SOURCE_SESSIONS),
            free.target.map(|slots| slots - OWN_TARGET_SESSIONS),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(allowed) = allowed else {
            return Ok((GrantedJobs(wanted), None));
        };
        if allowed < 1 {
            return Err(SyncError::Failed(anyhow::anyhow!(
                "the servers have no connection slots to spare (free: {}; dbsync needs {} on the source and {} on the target of its own, plus one per job)\nhint: close idle sessions or raise max_connections",
                describe_free(free),
                OWN_SOURCE_SESSIONS + 1,
                OWN_TARGET_SESSIONS + 1
            )));
        }
        if wanted.get() as i64 <= allowed {
            return Ok((GrantedJobs(wanted), None));
        }
        let lowered = Jobs::new(allowed as usize).expect("at least one");
        let warning = Warning::JobsLowered {
            wanted: wanted.get(),
            allowed: lowered.get(),
            free: describe_free(free),
        };
        Ok((GrantedJobs(lowered), Some(warning)))
    }

    /// A number of sessions no server was asked about, for a test of a step.
    #[cfg(test)]
    pub fn assumed(count: usize) -> GrantedJobs {
        GrantedJobs(Jobs::new(count).expect("at least one"))
    }

    pub fn get(self) -> usize {
        self.0.get()
    }
}

/// `12 (source) and 40 (target)`, naming only the servers the run connects to.
fn describe_free(free: FreeSlots) -> String {
    [(free.source, "source"), (free.target, "target")]
        .into_iter()
        .filter_map(|(slots, side)| slots.map(|slots| format!("{slots} ({side})")))
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(count: usize) -> Jobs {
        Jobs::new(count).unwrap()
    }

    fn both(source: i64, target: i64) -> FreeSlots {
        FreeSlots {
            source: Some(source),
            target: Some(target),
        }
    }

    #[test]
    fn jobs_are_lowered_to_the_slots_both_servers_can_spare() {
        let (kept, warning) = GrantedJobs::grant(jobs(4), both(100, 100)).unwrap();
        assert_eq!((kept.get(), warning), (4, None));
        let (lowered, warning) = GrantedJobs::grant(jobs(10_000), both(97, 50)).unwrap();
        assert_eq!(lowered.get(), 48);
        assert_eq!(
            warning,
            Some(Warning::JobsLowered {
                wanted: 10_000,
                allowed: 48,
                free: "97 (source) and 50 (target)".into(),
            })
        );
        assert!(GrantedJobs::grant(jobs(2), both(1, 50)).is_err());
    }

    #[test]
    fn a_run_with_one_server_is_lowered_by_that_server_alone() {
        let source_only = FreeSlots {
            source: Some(11),
            target: None,
        };
        let (lowered, warning) = GrantedJobs::grant(jobs(100_000), source_only).unwrap();
        assert_eq!(lowered.get(), 10);
        assert!(
            warning
                .unwrap()
                .to_string()
                .contains("can spare 11 (source) connection slots")
        );
        let target_only = FreeSlots {
            source: None,
            target: Some(7),
        };
        assert_eq!(GrantedJobs::grant(jobs(100), target_only).unwrap().0.get(), 5);
        let full = FreeSlots {
            source: None,
            target: Some(2),
        };
        let error = GrantedJobs::grant(jobs(3), full).unwrap_err();
        assert!(error.to_string().contains("free: 2 (target)"), "{error}");
    }
}
