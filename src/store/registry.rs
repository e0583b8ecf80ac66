//! The backend registry: put picks the first backend that supports an object
//! (backends registered later are asked first), get picks by kind. It
//! starts empty: the layer that assembles a store registers the backends.

use std::sync::{Arc, RwLock};

use super::backend::{DataBackend, Object};

/// Backends known to an `Omega`, shared by all its stores.
#[derive(Default)]
pub struct BackendRegistry {
    backends: RwLock<Vec<Arc<dyn DataBackend>>>,
}

impl BackendRegistry {
    /// A registry asking `backends` in the order given.
    pub fn with_backends(backends: Vec<Arc<dyn DataBackend>>) -> Self {
        Self {
            backends: RwLock::new(backends),
        }
    }

    /// Adds a backend ahead of those already registered, so it can take over
    /// objects (and kinds) that a built-in backend would otherwise handle.
    pub fn register(&self, backend: Arc<dyn DataBackend>) {
        self.write().insert(0, backend);
    }

    /// The backend owning `kind`.
    pub fn by_kind(&self, kind: &str) -> Option<Arc<dyn DataBackend>> {
        self.read()
            .iter()
            .find(|b| b.kinds().iter().any(|k| k == kind))
            .cloned()
    }

    /// The first backend that supports `obj`.
    pub fn supporting(&self, obj: &Object) -> Option<Arc<dyn DataBackend>> {
        self.read().iter().find(|b| b.supports(obj)).cloned()
    }

    /// Every kind any backend owns.
    pub fn kinds(&self) -> Vec<String> {
        self.read().iter().flat_map(|b| b.kinds()).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<dyn DataBackend>>> {
        // A panic while holding the lock cannot leave the Vec half-updated.
        self.backends.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<dyn DataBackend>>> {
        self.backends.write().unwrap_or_else(|e| e.into_inner())
    }
}
