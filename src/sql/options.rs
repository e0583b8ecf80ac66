//! Session settings of omegastore, settable with `SET omega.<key> = …`
//! unless the application fixed the identity (see `Omega::with_identity`).

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// Who is asking, and what the session may do.
    pub struct OmegaOptions {
        /// The user name mixins see.
        pub user: String, default = String::new()
        /// Comma-separated roles, e.g. `analyst,eu`.
        pub roles: String, default = String::new()
        /// When set, reads of any other bucket fail (bucket isolation).
        pub bound_bucket: String, default = String::new()
        /// Reject statements that write.
        pub read_only: bool, default = false
        /// The identity was fixed by the application: `SET omega.*` is refused.
        pub locked: bool, default = false
        /// The store's owner: a session opened without an identity (and the
        /// read-only or bucket-bound sessions derived from it). With no
        /// roles set, it is admin of every bucket.
        pub owner: bool, default = true
        /// How long one mixin may take to rewrite a plan before the query
        /// fails (a mixin that loops).
        pub mixin_time_limit_ms: u64, default = 30_000
    }
}

impl ConfigExtension for OmegaOptions {
    const PREFIX: &'static str = "omega";
}

impl OmegaOptions {
    pub fn role_list(&self) -> Vec<String> {
        self.roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect()
    }
}

extensions_options! {
    /// How omegastore's own operators run (`SET omega_exec.…`).
    pub struct ExecOptions {
        /// Multiply `Decimal128` values in 64 bits where they fit (see
        /// `decimal_multiply.rs`).
        pub narrow_decimal_multiply: bool, default = true
        /// Add a constant to a decimal column rescaling the constant once
        /// (see `decimal_constant_add.rs`).
        pub decimal_constant_add: bool, default = true
        /// Compute aggregates a statement repeats (a CTE named twice) once
        /// (see `shared_subplans.rs`).
        pub share_repeated_subplans: bool, default = true
    }
}

impl ConfigExtension for ExecOptions {
    const PREFIX: &'static str = "omega_exec";
}
