//! The scheduler's job watchdog: which running jobs to cancel because
//! nothing will ever move them. Ballista can leave a job `Running` with no
//! way forward (no executor left, or its tasks lost with an executor that
//! went away); its client would wait forever. [`JobWatch`] decides from
//! what the scheduler shows at each look; `process::watch_jobs` looks
//! every second and cancels what it names, so such a query fails with an
//! error instead of hanging.
//!
//! The decision is kept apart from Ballista's state, with time passed in,
//! so that it is tested without a cluster that has to get stuck first.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long jobs wait while no executor is alive before they are cancelled.
pub const NO_EXECUTORS_GRACE: Duration = Duration::from_secs(30);

/// How long a job may sit with nothing to run before it is cancelled.
pub const STUCK_JOB_GRACE: Duration = Duration::from_secs(30);

/// Why a job is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No executor was alive for [`NO_EXECUTORS_GRACE`] (one that registers
    /// within it picks the jobs up instead).
    NoExecutors,
    /// No task was ready to run and none ran on a live executor for
    /// [`STUCK_JOB_GRACE`]. A live job always has a task running or
    /// waiting for a slot.
    Stuck,
}

/// One running job as the scheduler shows it at a look.
#[derive(Debug, Clone)]
pub struct JobState<K> {
    pub job: K,
    /// A task is ready to run, or one runs on an executor still alive.
    pub moving: bool,
}

/// What the watchdog remembers between looks: since when each condition
/// has held.
#[derive(Debug)]
pub struct JobWatch<K> {
    no_executors_since: Option<Instant>,
    stuck_since: HashMap<K, Instant>,
}

impl<K> Default for JobWatch<K> {
    fn default() -> Self {
        JobWatch {
            no_executors_since: None,
            stuck_since: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> JobWatch<K> {
    /// One look at `now`: `executors` says whether any executor is alive,
    /// `jobs` lists the running jobs. Returns the jobs to cancel, each once
    /// (its timer starts over, should it still run at the next look).
    pub fn look(
        &mut self,
        now: Instant,
        executors: bool,
        jobs: &[JobState<K>],
    ) -> Vec<(K, Verdict)> {
        if jobs.is_empty() {
            self.no_executors_since = None;
            self.stuck_since.clear();
            return Vec::new();
        }
        if !executors {
            // with no executor nothing moves: one timer for all, not per job
            self.stuck_since.clear();
            let since = *self.no_executors_since.get_or_insert(now);
            if now.duration_since(since) < NO_EXECUTORS_GRACE {
                return Vec::new();
            }
            self.no_executors_since = None;
            return jobs
                .iter()
                .map(|j| (j.job.clone(), Verdict::NoExecutors))
                .collect();
        }
        self.no_executors_since = None;
        self.stuck_since
            .retain(|job, _| jobs.iter().any(|j| &j.job == job));
        let mut cancel = Vec::new();
        for state in jobs {
            if state.moving {
                self.stuck_since.remove(&state.job);
                continue;
            }
            let since = *self.stuck_since.entry(state.job.clone()).or_insert(now);
            if now.duration_since(since) >= STUCK_JOB_GRACE {
                self.stuck_since.remove(&state.job);
                cancel.push((state.job.clone(), Verdict::Stuck));
            }
        }
        cancel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, moving: bool) -> JobState<String> {
        JobState {
            job: name.to_string(),
            moving,
        }
    }

    fn names(cancel: Vec<(String, Verdict)>) -> Vec<(String, Verdict)> {
        let mut cancel = cancel;
        cancel.sort_by(|a, b| a.0.cmp(&b.0));
        cancel
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn jobs_are_cancelled_once_no_executor_was_alive_for_the_grace() {
        let mut watch = JobWatch::default();
        let t0 = Instant::now();
        let jobs = [job("a", false), job("b", true)];
        assert!(watch.look(t0, false, &jobs).is_empty());
        assert!(
            watch
                .look(t0 + NO_EXECUTORS_GRACE - SECOND, false, &jobs)
                .is_empty(),
            "cancelled before the grace ran out"
        );
        assert_eq!(
            names(watch.look(t0 + NO_EXECUTORS_GRACE, false, &jobs)),
            vec![
                ("a".to_string(), Verdict::NoExecutors),
                ("b".to_string(), Verdict::NoExecutors)
            ]
        );
        // named once: a job still listed a second later waits a new grace
        assert!(
            watch
                .look(t0 + NO_EXECUTORS_GRACE + SECOND, false, &jobs)
                .is_empty()
        );
    }

    #[test]
    fn an_executor_registering_within_the_grace_saves_the_jobs() {
        let mut watch = JobWatch::default();
        let t0 = Instant::now();
        let jobs = [job("a", false)];
        assert!(watch.look(t0, false, &jobs).is_empty());
        // an executor registers and takes the job's task
        let moving = [job("a", true)];
        assert!(watch.look(t0 + 20 * SECOND, true, &moving).is_empty());
        // it dies: the grace starts again from here, not from t0
        assert!(watch.look(t0 + 25 * SECOND, false, &jobs).is_empty());
        assert!(
            watch
                .look(t0 + 25 * SECOND + NO_EXECUTORS_GRACE - SECOND, false, &jobs)
                .is_empty(),
            "the earlier outage counted against the jobs"
        );
        assert_eq!(
            watch
                .look(t0 + 25 * SECOND + NO_EXECUTORS_GRACE, false, &jobs)
                .len(),
            1
        );
    }

    #[test]
    fn a_job_with_nothing_to_run_is_cancelled_and_a_moving_one_is_not() {
        let mut watch = JobWatch::default();
        let t0 = Instant::now();
        let jobs = [job("stuck", false), job("busy", true)];
        assert!(watch.look(t0, true, &jobs).is_empty());
        assert!(
            watch
                .look(t0 + STUCK_JOB_GRACE - SECOND, true, &jobs)
                .is_empty()
        );
        assert_eq!(
            watch.look(t0 + STUCK_JOB_GRACE, true, &jobs),
            vec![("stuck".to_string(), Verdict::Stuck)]
        );
        // a job that keeps moving is never cancelled, however long it runs
        let busy = [job("busy", true)];
        assert!(
            watch
                .look(t0 + 100 * STUCK_JOB_GRACE, true, &busy)
                .is_empty()
        );
    }

    #[test]
    fn a_job_that_moves_again_starts_its_grace_over() {
        let mut watch = JobWatch::default();
        let t0 = Instant::now();
        // a stage rolls back: for a while nothing is ready, then tasks are
        assert!(watch.look(t0, true, &[job("a", false)]).is_empty());
        assert!(
            watch
                .look(t0 + STUCK_JOB_GRACE - SECOND, true, &[job("a", true)])
                .is_empty()
        );
        let later = t0 + STUCK_JOB_GRACE;
        assert!(
            watch.look(later, true, &[job("a", false)]).is_empty(),
            "the pause before it moved counted"
        );
        assert!(
            watch
                .look(later + STUCK_JOB_GRACE - SECOND, true, &[job("a", false)])
                .is_empty()
        );
        assert_eq!(
            watch.look(later + STUCK_JOB_GRACE, true, &[job("a", false)]),
            vec![("a".to_string(), Verdict::Stuck)]
        );
    }

    #[test]
    fn finished_jobs_are_forgotten() {
        let mut watch = JobWatch::default();
        let t0 = Instant::now();
        assert!(
            watch
                .look(t0, true, &[job("a", false), job("b", true)])
                .is_empty()
        );
        // `a` finishes; `b` runs on
        assert!(watch.look(t0 + SECOND, true, &[job("b", true)]).is_empty());
        assert!(watch.stuck_since.is_empty(), "{:?}", watch.stuck_since);
        // no jobs at all: both timers cleared
        assert!(watch.look(t0 + 2 * SECOND, false, &[]).is_empty());
        assert!(watch.no_executors_since.is_none());
    }
}
