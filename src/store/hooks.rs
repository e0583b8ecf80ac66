//! Hooks the store calls on every read and write, so that policies (access
//! control, schema contracts) apply to every client alike. The SQL layer
//! implements them; the store only knows the traits.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use super::error::Result;

/// The dataset a write goes to.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub bucket: String,
    pub prefix: String,
    pub name: String,
}

/// Sees the plan that produces the rows of every table write (a put, an
/// INSERT, a CREATE TABLE AS) and returns the plan to write instead. An error
/// aborts the write before anything is committed.
#[async_trait]
pub trait WriteHook: Send + Sync {
    fn name(&self) -> &str;

    /// Called before every put of any kind (`kind` is what will be stored:
    /// a table, a document, a view, …); an error refuses it before
    /// anything is written. The default accepts.
    async fn check_put(
        &self,
        _target: &WriteTarget,
        _kind: &str,
        _session: &SessionContext,
    ) -> Result<()> {
        Ok(())
    }

    async fn rewrite_write(
        &self,
        target: &WriteTarget,
        plan: LogicalPlan,
        session: &SessionContext,
    ) -> Result<LogicalPlan>;
}

/// Called before every table read is planned (for example to load the
/// policies that the read's rewrite rules apply). An error fails the read.
#[async_trait]
pub trait ReadHook: Send + Sync {
    fn name(&self) -> &str;
    async fn prepare(&self) -> Result<()>;
}

/// What a store call does to an object; also the privilege a role holds on
/// a bucket (each level includes the ones below it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// get, list, metadata, history, a SQL scan.
    Read,
    /// put of any kind, drop, tag, attributes, row changes, vacuum.
    Write,
    /// Store-wide maintenance (gc) and policy changes.
    Admin,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        })
    }
}

/// Decides whether the session may do `access` to `target`; the store asks
/// before every read and every write of any kind, so a library call is
/// held to the same rules as SQL. An error (typed: permission denied)
/// stops the call before it reads or writes anything.
#[async_trait]
pub trait AccessHook: Send + Sync {
    fn name(&self) -> &str;
    async fn check(
        &self,
        target: &WriteTarget,
        access: Access,
        session: &SessionContext,
    ) -> Result<()>;
}

/// The hooks of one `Omega`.
#[derive(Default)]
pub struct Hooks {
    write: RwLock<Vec<Arc<dyn WriteHook>>>,
    read: RwLock<Vec<Arc<dyn ReadHook>>>,
    access: RwLock<Vec<Arc<dyn AccessHook>>>,
}

impl Hooks {
    pub fn add_write(&self, hook: Arc<dyn WriteHook>) {
        self.write
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    pub fn add_read(&self, hook: Arc<dyn ReadHook>) {
        self.read
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    pub fn add_access(&self, hook: Arc<dyn AccessHook>) {
        self.access
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Asks every access hook; the first refusal wins.
    pub async fn check_access(
        &self,
        target: &WriteTarget,
        access: Access,
        session: &SessionContext,
    ) -> Result<()> {
        let hooks: Vec<_> = self
            .access
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for h in hooks {
            h.check(target, access, session).await?;
        }
        Ok(())
    }

    /// Asks every write hook whether a put of `kind` may go ahead.
    pub async fn check_put(
        &self,
        target: &WriteTarget,
        kind: &str,
        session: &SessionContext,
    ) -> Result<()> {
        let hooks: Vec<_> = self.write.read().unwrap_or_else(|e| e.into_inner()).clone();
        for h in hooks {
            h.check_put(target, kind, session).await?;
        }
        Ok(())
    }

    /// Runs every write hook in registration order.
    pub async fn rewrite_write(
        &self,
        target: &WriteTarget,
        mut plan: LogicalPlan,
        session: &SessionContext,
    ) -> Result<LogicalPlan> {
        let hooks: Vec<_> = self.write.read().unwrap_or_else(|e| e.into_inner()).clone();
        for h in hooks {
            plan = h.rewrite_write(target, plan, session).await?;
        }
        Ok(plan)
    }

    /// Runs every read hook's `prepare`.
    pub async fn prepare_read(&self) -> Result<()> {
        let hooks: Vec<_> = self.read.read().unwrap_or_else(|e| e.into_inner()).clone();
        for h in hooks {
            h.prepare().await?;
        }
        Ok(())
    }
}
