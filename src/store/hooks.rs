//! Hooks the store calls on every table write and read, so that policies
//! (schema contracts, access control) apply to every client alike. The SQL
//! layer implements them; the store only knows the traits.

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

/// The hooks of one `Omega`.
#[derive(Default)]
pub struct Hooks {
    write: RwLock<Vec<Arc<dyn WriteHook>>>,
    read: RwLock<Vec<Arc<dyn ReadHook>>>,
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
