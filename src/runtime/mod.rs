//! The runtime: background tasks, stored SQL jobs and cron schedules, with
//! every record in the store (`_system/runtime/` of the root) so that a
//! restart, another process or a SQL query sees them.
//!
//! | file | what |
//! | --- | --- |
//! | `tasks.rs` | `Runtime`: submit, status, wait, cancel; the worker pool; leases and `abandoned` |
//! | `jobs.rs` | `sql.script` jobs: parameters, checks, running the statements, run records |
//! | `schedules.rs` | cron schedules and the `Scheduler` (one run per instant across processes) |
//! | `tables.rs` | `omega.system.tasks`, `jobs`, `schedules`, `job_runs` |
//! | `records.rs` | the JSON records (atomic replace, put-if-absent claims) |
//! | `clock.rs` | the clock the scheduler reads (injectable for tests) |
//! | `error.rs` | `RuntimeError` |

pub mod clock;
pub mod error;
pub mod jobs;
pub mod records;
pub mod schedules;
pub mod tables;
pub mod tasks;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::RuntimeError;
pub use jobs::{JobRun, Jobs, RunStatus, StatementRecord};
pub use schedules::{Schedule, Scheduler, Schedules, TickReport};
pub use tasks::{
    EngineFor, RecordWrites, Runtime, RuntimeOptions, Submitter, TaskHandle, TaskRecord, TaskSpec,
    TaskStatus, Tasks,
};
