//! The shared Wasmtime engine, its epoch ticker and the compiled-module cache.
//!
//! One [`Engine`] serves every task. Epoch interruption is always on: a ticker thread
//! advances the epoch every [`TICK`], and every store yields to the async runtime on each
//! tick, so a spinning guest can neither starve the MQTT loop nor outlive a dropped future.
//! Compilation is CPU-heavy and runs on the blocking pool, once per content digest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::OnceCell;
use tracing::Instrument as _;
use wasmtime::component::{self, Component};
use wasmtime::{Engine, InstancePre, Linker, Module, Store, UpdateDeadline};

use super::host::{ComponentState, HostState};
use super::{Digest, RuntimeError, TaskSpec};
use crate::sandbox::{MemoryLimiter, Scratch};
use crate::telemetry::Metrics;

/// How often the epoch advances: the granularity of preemption and deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// Advances the engine's epoch every [`TICK`] until dropped (or the engine is gone).
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> std::io::Result<Self> {
        let weak = engine.weak();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("proplet-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panicked ticker has nothing left to clean up.
            thread.join().ok();
        }
    }
}

/// Store state that carries the task's memory limiter and knows its output budget.
pub trait Limited: Send + 'static {
    /// The limiter Wasmtime consults on every memory or table growth.
    fn limiter(&mut self) -> &mut MemoryLimiter;

    /// Whether the guest tried to write past its output budget (it is then stopped at the
    /// next epoch tick, whatever it does with the refused write).
    fn output_exhausted(&self) -> bool;
}

/// A compiled, linked module or component, ready to instantiate.
#[derive(Clone)]
pub enum Prepared {
    /// A core module (WASI preview 1).
    Core(InstancePre<HostState>),
    /// A component (WASI preview 2).
    Component(component::InstancePre<ComponentState>),
}

struct CacheEntry {
    cell: Arc<OnceCell<Prepared>>,
    last_used: u64,
}

/// The engine, the WASI linkers and a bounded cache of prepared modules and components.
pub struct WasmEngine {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    component_linker: Arc<component::Linker<ComponentState>>,
    cache: Mutex<HashMap<Digest, CacheEntry>>,
    capacity: usize,
    clock: AtomicU64,
    compiles: AtomicU64,
    /// Whether stores meter fuel (`consume_fuel` is an engine-wide setting).
    fuel: bool,
    /// Cache hits and misses are counted here.
    metrics: Metrics,
    /// Parent of every task's private scratch directory; removed with the engine.
    scratch_root: tempfile::TempDir,
    _ticker: EpochTicker,
}

impl WasmEngine {
    /// Builds the engine with epoch interruption, fuel metering when `fuel` is set, and a
    /// cache of `capacity` modules.
    pub fn new(capacity: usize, fuel: bool, metrics: Metrics) -> Result<Self, RuntimeError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true).consume_fuel(fuel);
        let engine = Engine::new(&config).map_err(RuntimeError::internal)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut HostState| &mut s.wasi)
            .map_err(RuntimeError::internal)?;
        let mut component_linker = component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(RuntimeError::internal)?;
        super::workload::add_to_linker(&mut component_linker).map_err(RuntimeError::internal)?;
        let ticker = EpochTicker::start(&engine).map_err(RuntimeError::internal)?;
        let scratch_root = tempfile::Builder::new()
            .prefix("proplet-scratch-")
            .tempdir()
            .map_err(RuntimeError::internal)?;
        Ok(WasmEngine {
            engine,
            linker: Arc::new(linker),
            component_linker: Arc::new(component_linker),
            cache: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            fuel,
            metrics,
            scratch_root,
            _ticker: ticker,
        })
    }

    /// The Wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A store for one task that always has the memory limiter installed and yields to the
    /// async runtime at every epoch tick, so a guest cannot starve other tasks and dropping
    /// the call's future (stop, timeout, shutdown) really stops it. A guest past its output
    /// budget is stopped at the next tick. With metering on, the store gets the task's fuel
    /// (unmetered tasks get all there is) and every tick records the fuel used so far.
    pub fn store<T: Limited>(&self, state: T, spec: &TaskSpec) -> Result<Store<T>, RuntimeError> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s.limiter());
        let budget = spec.limits.fuel.filter(|_| self.fuel);
        if self.fuel {
            store
                .set_fuel(budget.unwrap_or(u64::MAX))
                .map_err(RuntimeError::internal)?;
        }
        let meter = spec.meter.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |ctx| {
            if let (Some(budget), Ok(left)) = (budget, ctx.get_fuel()) {
                meter.fuel(budget.saturating_sub(left));
            }
            if ctx.data().output_exhausted() {
                wasmtime::bail!("the output budget is exhausted");
            }
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }

    /// Records the final fuel reading of a finished run.
    pub fn settle<T>(&self, store: &Store<T>, spec: &TaskSpec) {
        let budget = spec.limits.fuel.filter(|_| self.fuel);
        if let (Some(budget), Ok(left)) = (budget, store.get_fuel()) {
            spec.meter.fuel(budget.saturating_sub(left));
        }
    }

    /// A fresh private scratch directory for one task.
    pub fn scratch(&self) -> Result<Scratch, RuntimeError> {
        Scratch::create(self.scratch_root.path())
            .map_err(|e| RuntimeError::Internal(format!("cannot create a scratch directory: {e}")))
    }

    /// How many modules were compiled so far (cache misses).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The prepared module for `bytes`, compiling it on the blocking pool on a cache miss.
    /// Concurrent requests for one digest share a single compilation. Traced as `compile`
    /// with `cache.hit`.
    pub async fn prepare(
        &self,
        digest: &Digest,
        bytes: Arc<[u8]>,
    ) -> Result<Prepared, RuntimeError> {
        let cell = self.cache_cell(digest);
        let hit = cell.initialized();
        self.metrics.cache(hit);
        let span = tracing::info_span!("compile", cache.hit = hit, binary.digest = %digest);
        let result = cell
            .get_or_try_init(|| self.compile(bytes))
            .instrument(span.clone())
            .await
            .cloned();
        if let Err(e) = &result {
            crate::telemetry::trace::fail(&span, e.kind().as_str(), "the binary does not compile");
            self.lock_cache().remove(digest);
        }
        result
    }

    async fn compile(&self, bytes: Arc<[u8]>) -> Result<Prepared, RuntimeError> {
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let component_linker = self.component_linker.clone();
        let job = tokio::task::spawn_blocking(move || {
            if wasmparser::Parser::is_component(&bytes) {
                let component =
                    Component::from_binary(&engine, &bytes).map_err(RuntimeError::compile)?;
                let pre = component_linker
                    .instantiate_pre(&component)
                    .map_err(RuntimeError::compile)?;
                return Ok(Prepared::Component(pre));
            }
            let module = Module::from_binary(&engine, &bytes).map_err(RuntimeError::compile)?;
            linker
                .instantiate_pre(&module)
                .map(Prepared::Core)
                .map_err(RuntimeError::compile)
        });
        job.await.map_err(RuntimeError::internal)?
    }

    fn cache_cell(&self, digest: &Digest) -> Arc<OnceCell<Prepared>> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.lock_cache();
        if let Some(entry) = cache.get_mut(digest) {
            entry.last_used = now;
            return entry.cell.clone();
        }
        if cache.len() >= self.capacity {
            let oldest = cache
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(d, _)| d.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        let cell = Arc::new(OnceCell::new());
        cache.insert(
            digest.clone(),
            CacheEntry {
                cell: cell.clone(),
                last_used: now,
            },
        );
        cell
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, CacheEntry>> {
        // The cache holds no invariant a panic could break; recover from poisoning.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD: &str = r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#;

    #[tokio::test]
    async fn a_module_is_compiled_once_per_digest() {
        let engine = Arc::new(WasmEngine::new(4, false, Metrics::default()).expect("engine"));
        let bytes: Arc<[u8]> = wat::parse_str(ADD).expect("wat").into();
        let digest = Digest::of(&bytes);
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (engine, bytes, digest) = (engine.clone(), bytes.clone(), digest.clone());
                tokio::spawn(async move { engine.prepare(&digest, bytes).await.map(|_| ()) })
            })
            .collect();
        for r in racers {
            r.await.expect("join").expect("compiles");
        }
        assert_eq!(engine.compiles(), 1);
    }

    #[tokio::test]
    async fn failures_are_not_cached_and_the_cache_is_bounded() {
        let engine = WasmEngine::new(2, true, Metrics::default()).expect("engine");
        let junk: Arc<[u8]> = Arc::from(&b"not wasm"[..]);
        let junk_digest = Digest::of(&junk);
        assert!(matches!(
            engine.prepare(&junk_digest, junk.clone()).await,
            Err(RuntimeError::Compile(_))
        ));
        assert!(engine.prepare(&junk_digest, junk).await.is_err());
        assert_eq!(
            engine.compiles(),
            2,
            "a failed compile is retried, not cached"
        );
        for n in 0..3 {
            let text = format!(r#"(module (func (export "f{n}")))"#);
            let bytes: Arc<[u8]> = wat::parse_str(&text).expect("wat").into();
            engine
                .prepare(&Digest::of(&bytes), bytes)
                .await
                .expect("compiles");
        }
        assert!(engine.lock_cache().len() <= 2);
    }
}
