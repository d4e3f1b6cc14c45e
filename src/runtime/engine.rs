//! The shared Wasmtime engine, its epoch ticker and the compiled-module cache.
//!
//! One [`Engine`] serves every task. Epoch interruption is always on: while any guest runs,
//! a ticker thread advances the epoch every [`TICK`], and every store yields to the async
//! runtime on each tick, so a spinning guest can neither starve the MQTT loop nor outlive a
//! dropped future. With no guest running, the ticker sleeps.
//! Compilation is CPU-heavy and runs on the blocking pool, once per content digest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::OnceCell;
use tracing::{Instrument as _, warn};
use wasmtime::component::{self, Component};
use wasmtime::{Engine, InstancePre, Linker, Module, Store, UpdateDeadline};

use super::allocator::{Allocation, Allocator};
use super::disk_cache::{DiskCache, DiskCacheConfig, Kind};
use super::host::{ComponentState, HostState, Limited};
use super::{Digest, RuntimeError, TaskSpec};
use crate::sandbox::{SandboxLimits, Scratch, ScratchQuota, ScratchRoot};
use crate::telemetry::Metrics;

/// How often the epoch advances: the granularity of preemption and deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// Advances the engine's epoch every [`TICK`] while a guest may run (a [`Ticking`] guard
/// is alive), and sleeps otherwise: an idle worker is not woken a hundred times a second.
/// Stops when dropped (or when the engine is gone).
struct EpochTicker {
    stop: Arc<AtomicBool>,
    /// Guards alive: stores that may run guest code.
    running: Arc<AtomicUsize>,
    /// Times the epoch advanced.
    ticks: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> std::io::Result<Self> {
        let weak = engine.weak();
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(0));
        let ticks = Arc::new(AtomicU64::new(0));
        let (flag, guests, ticked) = (stop.clone(), running.clone(), ticks.clone());
        let thread = std::thread::Builder::new()
            .name("proplet-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    if guests.load(Ordering::Acquire) == 0 {
                        // Woken by the next guard (or the stop); a spurious wake loops.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    ticked.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        Ok(EpochTicker {
            stop,
            running,
            ticks,
            thread: Some(thread),
        })
    }

    /// Keeps the epoch advancing until the guard is dropped.
    fn ticking(&self) -> Ticking {
        self.running.fetch_add(1, Ordering::AcqRel);
        self.wake();
        Ticking(self.running.clone())
    }

    fn wake(&self) {
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(thread) = self.thread.take() {
            // A panicked ticker has nothing left to clean up.
            thread.join().ok();
        }
    }
}

/// While alive, the epoch advances: held by every run of guest code (deadlines, time
/// slices and the budgets checked at each tick depend on it).
#[must_use = "the epoch advances only while the guard is alive"]
pub struct Ticking(Arc<AtomicUsize>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A compiled, linked module or component, ready to instantiate, and whether it can open
/// files (read once from its imports, when it is prepared).
#[derive(Clone)]
pub enum Prepared {
    /// A core module (WASI preview 1).
    Core(InstancePre<HostState>, Files),
    /// A component (WASI preview 2).
    Component(component::InstancePre<ComponentState>, Files),
}

/// Whether a guest imports a way to reach a directory: only then does it get a scratch
/// directory (and a quota watcher). Without one, nothing it does can touch the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// It imports a preview 1 `path_*` function, or `wasi:filesystem/preopens`.
    Reached,
    /// It imports neither: its preopened directories could never be used.
    Unreached,
}

impl Files {
    fn from(reached: bool) -> Files {
        if reached {
            Files::Reached
        } else {
            Files::Unreached
        }
    }

    /// For a core module: does it import any preview 1 `path_*` function (the only calls
    /// that open, create or change anything under a directory)?
    pub fn of_module(module: &Module) -> Files {
        Files::from(module.imports().any(|i| i.name().starts_with("path_")))
    }

    /// For a component: does it import `wasi:filesystem/preopens` (the only source of
    /// directory descriptors)?
    pub fn of_component(component: &Component, engine: &Engine) -> Files {
        let ty = component.component_type();
        let mut imports = ty.imports(engine);
        Files::from(imports.any(|(name, _)| name.starts_with("wasi:filesystem/preopens")))
    }
}

impl Prepared {
    /// Bytes of compiled code and data it keeps in memory.
    fn image_bytes(&self) -> usize {
        let range = match self {
            Prepared::Core(pre, _) => pre.module().image_range(),
            Prepared::Component(pre, _) => pre.component().image_range(),
        };
        (range.end as usize).saturating_sub(range.start as usize)
    }
}

/// How much compiled code the engine keeps, in memory and on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLimits {
    /// Modules and components kept in memory.
    pub entries: usize,
    /// Bytes of compiled code and data kept in memory (the most recently compiled entry
    /// is kept even when it alone is larger).
    pub bytes: usize,
    /// Compiled code kept on disk across restarts; `None`: nothing is kept.
    pub disk: Option<DiskCacheConfig>,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            entries: 64,
            bytes: 512 << 20,
            disk: None,
        }
    }
}

struct CacheEntry {
    cell: Arc<OnceCell<Prepared>>,
    last_used: u64,
    /// Compiled size, once compiled.
    bytes: usize,
}

/// The engine, the WASI linkers and a bounded cache of prepared modules and components.
///
/// The Wasmtime parts (engine, compiler, linkers, the epoch ticker thread, the disk cache)
/// are made when the first task needs them: an idle worker does not pay for them.
pub struct WasmEngine {
    parts: OnceLock<Result<Parts, String>>,
    cache: Mutex<HashMap<Digest, CacheEntry>>,
    limits: CacheLimits,
    clock: AtomicU64,
    compiles: AtomicU64,
    /// Whether stores meter fuel (`consume_fuel` is an engine-wide setting).
    fuel: bool,
    /// Handles and scratch quota of every task.
    sandbox: SandboxLimits,
    /// Cache hits and misses are counted here.
    metrics: Metrics,
    /// Parent of every task's private scratch directory; removed with the engine.
    scratch_root: ScratchRoot,
    /// Which instance allocator to set Wasmtime up with.
    allocation: Allocation,
    /// HTTP clients of guests' outbound requests.
    http: super::http::Clients,
}

/// What the first task makes.
struct Parts {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    component_linker: Arc<component::Linker<ComponentState>>,
    /// Compiled code kept across restarts, when configured and usable.
    disk: Option<Arc<DiskCache>>,
    /// The instance allocator in effect.
    allocator: Allocator,
    ticker: EpochTicker,
}

impl Parts {
    /// The engine with epoch interruption (and fuel metering when `fuel` is set) and the
    /// instance allocator of `allocation`, its WASI and workload linkers, the ticker, and
    /// the disk cache of `disk`.
    fn new(
        fuel: bool,
        disk: Option<&DiskCacheConfig>,
        allocation: &Allocation,
    ) -> Result<Self, RuntimeError> {
        let (engine, allocator) = make_engine(fuel, allocation)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut HostState| &mut s.wasi)
            .map_err(RuntimeError::internal)?;
        let mut component_linker = component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(RuntimeError::internal)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            .map_err(RuntimeError::internal)?;
        wasmtime_wasi_config::add_to_linker(&mut component_linker, ComponentState::config)
            .map_err(RuntimeError::internal)?;
        super::workload::add_kv_to_linker(&mut component_linker, ComponentState::kv)
            .map_err(RuntimeError::internal)?;
        super::workload::add_to_linker(&mut component_linker, |s: &mut ComponentState| {
            &mut s.workload
        })
        .map_err(RuntimeError::internal)?;
        let ticker = EpochTicker::start(&engine).map_err(RuntimeError::internal)?;
        let disk = disk.and_then(|c| open_disk_cache(&engine, c));
        Ok(Parts {
            engine,
            linker: Arc::new(linker),
            component_linker: Arc::new(component_linker),
            disk,
            allocator,
            ticker,
        })
    }
}

/// The engine, pooling instances when `allocation` prefers it; under `auto`, a pool that
/// cannot be reserved gives way to on-demand allocation (with a warning).
fn make_engine(fuel: bool, allocation: &Allocation) -> Result<(Engine, Allocator), RuntimeError> {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true).consume_fuel(fuel);
    // Tasks are WASI preview 2 components and core modules: without the component model's
    // concurrency (preview 3's async ABI, streams, futures), a store sets up no fibers and
    // futures of its own, which are a fifth of a component task's host CPU.
    config.concurrency_support(false);
    let preferred = allocation.preferred();
    config.allocation_strategy(allocation.strategy(preferred));
    match Engine::new(&config) {
        Ok(engine) => Ok((engine, preferred)),
        Err(e) if preferred == Allocator::Pooling && allocation.may_fall_back() => {
            warn!(error = %e, "cannot reserve the instance pool; allocating on demand");
            config.allocation_strategy(allocation.strategy(Allocator::OnDemand));
            let engine = Engine::new(&config).map_err(RuntimeError::internal)?;
            Ok((engine, Allocator::OnDemand))
        }
        Err(e) => Err(RuntimeError::internal(e)),
    }
}

impl WasmEngine {
    /// An engine metering fuel when `fuel` is set, with a cache of compiled code within
    /// `cache`, the `sandbox` limits of every task, and their scratch directories under
    /// `scratch_root`. Wasmtime itself is set up by the first task (see
    /// [`WasmEngine::warm_up`]).
    pub fn new(
        cache: CacheLimits,
        fuel: bool,
        sandbox: SandboxLimits,
        metrics: Metrics,
        scratch_root: ScratchRoot,
    ) -> Self {
        WasmEngine {
            parts: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
            limits: CacheLimits {
                entries: cache.entries.max(1),
                ..cache
            },
            clock: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            fuel,
            sandbox,
            metrics,
            scratch_root,
            allocation: Allocation::default(),
            http: super::http::Clients::default(),
        }
    }

    /// Sets Wasmtime up with the instance allocator of `allocation` (on demand unless
    /// given), when the first task comes.
    pub fn with_allocation(mut self, allocation: Allocation) -> Self {
        self.allocation = allocation;
        self
    }

    /// The instance allocator in effect, or the one the first task will try.
    pub fn allocator(&self) -> Allocator {
        match self.parts.get() {
            Some(Ok(parts)) => parts.allocator,
            _ => self.allocation.preferred(),
        }
    }

    /// Sets Wasmtime up now rather than at the first task (to find a broken setup early).
    pub fn warm_up(&self) -> Result<(), RuntimeError> {
        self.parts().map(|_| ())
    }

    fn parts(&self) -> Result<&Parts, RuntimeError> {
        let made = self.parts.get_or_init(|| {
            Parts::new(self.fuel, self.limits.disk.as_ref(), &self.allocation)
                .map_err(|e| e.to_string())
        });
        made.as_ref()
            .map_err(|e| RuntimeError::Internal(format!("cannot set Wasmtime up: {e}")))
    }

    /// A store for one task that always has the memory limiter installed and yields to the
    /// async runtime at every epoch tick, so a guest cannot starve other tasks and dropping
    /// the call's future (stop, timeout, shutdown) really stops it. A guest past its output
    /// budget is stopped at the next tick. With metering on, the store gets the task's fuel
    /// (unmetered tasks get all there is) and every tick records the fuel used so far.
    /// The epoch advances only while a [`WasmEngine::ticking`] guard is held.
    pub fn store<T: Limited>(&self, state: T, spec: &TaskSpec) -> Result<Store<T>, RuntimeError> {
        let mut store = Store::new(&self.parts()?.engine, state);
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
            if let Some(why) = ctx.data().http_exhausted() {
                wasmtime::bail!("the HTTP budget is exhausted: {why}");
            }
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }

    /// Keeps the epoch advancing while the guard lives: taken before a store runs guest
    /// code, dropped after it.
    pub fn ticking(&self) -> Result<Ticking, RuntimeError> {
        Ok(self.parts()?.ticker.ticking())
    }

    /// How many times the epoch has advanced (0 before the first task).
    pub fn epoch_ticks(&self) -> u64 {
        match self.parts.get() {
            Some(Ok(parts)) => parts.ticker.ticks.load(Ordering::Relaxed),
            _ => 0,
        }
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
        self.scratch_root
            .scratch()
            .map_err(|e| RuntimeError::Internal(format!("cannot create a scratch directory: {e}")))
    }

    /// The HTTP clients guests' requests go out through.
    pub(super) fn http_clients(&self) -> &super::http::Clients {
        &self.http
    }

    /// Most WASI handles (files, directories, streams, sockets) one task may hold.
    pub fn task_handles(&self) -> usize {
        self.sandbox.handles
    }

    /// What a task's scratch directory may hold.
    pub fn scratch_quota(&self) -> ScratchQuota {
        self.sandbox.scratch
    }

    /// How many modules were compiled so far (cache misses).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The prepared module for `bytes`, compiling it on the blocking pool on a cache miss.
    /// Concurrent requests for one digest share a single compilation, which runs in a task
    /// of its own: a caller that gives up (stopped, timed out) does not waste it, the
    /// compile finishes into the cache for the next task with that digest. Traced as
    /// `compile` with `cache.hit`.
    pub async fn prepare(
        self: &Arc<Self>,
        digest: &Digest,
        bytes: Arc<[u8]>,
    ) -> Result<Prepared, RuntimeError> {
        let cell = self.cache_cell(digest);
        let hit = cell.initialized();
        self.metrics.cache(hit);
        let span = tracing::info_span!("compile", cache.hit = hit, binary.digest = %digest);
        if let Some(prepared) = cell.get() {
            return Ok(prepared.clone());
        }
        let engine = self.clone();
        let digest_owned = digest.clone();
        let compile = async move {
            cell.get_or_try_init(|| engine.compile(digest_owned, bytes))
                .await
                .cloned()
        };
        let result = tokio::spawn(compile.instrument(span.clone()))
            .await
            .unwrap_or_else(|e| Err(RuntimeError::internal(e)));
        match &result {
            Ok(prepared) => self.account(digest, prepared.image_bytes()),
            Err(e) => {
                crate::telemetry::trace::fail(
                    &span,
                    e.kind().as_str(),
                    "the binary does not compile",
                );
                self.lock_cache().remove(digest);
            }
        }
        result
    }

    /// Records the compiled size of `digest`, then evicts the least recently used other
    /// entries until the cache is within its byte limit.
    fn account(&self, digest: &Digest, bytes: usize) {
        let mut cache = self.lock_cache();
        if let Some(entry) = cache.get_mut(digest) {
            entry.bytes = bytes;
        }
        while cache.values().map(|e| e.bytes).sum::<usize>() > self.limits.bytes {
            let oldest = cache
                .iter()
                .filter(|(d, e)| *d != digest && e.bytes > 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(oldest) => cache.remove(&oldest),
                None => break,
            };
        }
    }

    async fn compile(&self, digest: Digest, bytes: Arc<[u8]>) -> Result<Prepared, RuntimeError> {
        let parts = self.parts()?;
        let engine = parts.engine.clone();
        let linker = parts.linker.clone();
        let component_linker = parts.component_linker.clone();
        let disk = parts.disk.clone();
        let job = tokio::task::spawn_blocking(move || {
            let disk = disk.as_deref().map(|cache| (cache, &digest));
            if wasmparser::Parser::is_component(&bytes) {
                let (component, compiled) = load_or_compile::<Component>(&engine, disk, &bytes);
                let pre = component.and_then(|c| {
                    let files = Files::of_component(&c, &engine);
                    let pre = component_linker.instantiate_pre(&c);
                    pre.map(|pre| Prepared::Component(pre, files))
                        .map_err(RuntimeError::compile)
                });
                return (pre, compiled);
            }
            let (module, compiled) = load_or_compile::<Module>(&engine, disk, &bytes);
            let pre = module.and_then(|m| {
                let files = Files::of_module(&m);
                let pre = linker.instantiate_pre(&m);
                pre.map(|pre| Prepared::Core(pre, files))
                    .map_err(RuntimeError::compile)
            });
            (pre, compiled)
        });
        let (prepared, compiled) = job.await.map_err(RuntimeError::internal)?;
        if compiled {
            self.compiles.fetch_add(1, Ordering::Relaxed);
            self.metrics.cache_result("compiled");
        } else {
            self.metrics.cache_result("disk_hit");
        }
        prepared
    }

    fn cache_cell(&self, digest: &Digest) -> Arc<OnceCell<Prepared>> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.lock_cache();
        if let Some(entry) = cache.get_mut(digest) {
            entry.last_used = now;
            return entry.cell.clone();
        }
        if cache.len() >= self.limits.entries {
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
                bytes: 0,
            },
        );
        cell
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, CacheEntry>> {
        // The cache holds no invariant a panic could break; recover from poisoning.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Opens the disk cache for `engine`'s fingerprint; a cache that cannot be opened is
/// logged and left out (tasks still run, compiled in memory only).
/// What compiled code of `engine` is compatible with: Wasmtime's version, the target and
/// the compiler settings (not the instance allocator, so `proplet precompile` warms the
/// cache of a pooling daemon).
fn fingerprint(engine: &Engine) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("wasmtime-{:016x}", hasher.finish())
}

fn open_disk_cache(engine: &Engine, config: &DiskCacheConfig) -> Option<Arc<DiskCache>> {
    match DiskCache::open(config, &fingerprint(engine)) {
        Ok(cache) => Some(Arc::new(cache)),
        Err(e) => {
            tracing::warn!(dir = %config.dir.display(), error = %e, "the compile cache directory is unusable; compiling in memory only");
            None
        }
    }
}

/// A module or a component: compiled from a binary, or loaded from the disk cache.
trait Compiled: Sized {
    const KIND: Kind;
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
    /// # Safety
    /// `bytes` must be what `serialize` produced with a compatible engine: the disk cache
    /// hands over only entries whose checksum holds, in a private directory.
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
}

impl Compiled for Module {
    const KIND: Kind = Kind::Module;
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Module::from_binary(engine, bytes)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Module::serialize(self)
    }
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: see the trait; Wasmtime checks the format, version and engine settings.
        unsafe { Module::deserialize(engine, bytes) }
    }
}

impl Compiled for Component {
    const KIND: Kind = Kind::Component;
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Component::from_binary(engine, bytes)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Component::serialize(self)
    }
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: see the trait; Wasmtime checks the format, version and engine settings.
        unsafe { Component::deserialize(engine, bytes) }
    }
}

/// Why `bytes` did not compile. A binary that a slot of the instance pool cannot hold (a
/// memory or table larger than a slot, more of them than a task may have) is refused for
/// its size, as the memory budget would refuse it, not for bad code.
fn compile_error(e: wasmtime::Error) -> RuntimeError {
    let text = format!("{e:#}");
    if text.contains("pooling allocator") {
        return RuntimeError::Memory(format!(
            "the binary needs more than one task's slot of the instance pool holds ({text}); \
             a worker with PROPLET_INSTANCE_ALLOCATOR=on-demand has no slot limits"
        ));
    }
    RuntimeError::Compile(text)
}

/// `bytes` compiled, or loaded from `disk` (the cache and the binary's digest), and
/// whether it was compiled. What is compiled is stored for the next process.
fn load_or_compile<T: Compiled>(
    engine: &Engine,
    disk: Option<(&DiskCache, &Digest)>,
    bytes: &[u8],
) -> (Result<T, RuntimeError>, bool) {
    if let Some((cache, digest)) = disk
        && let Some(artifact) = cache.load(digest, T::KIND)
    {
        // SAFETY: an intact entry of our own private cache (see `Compiled::deserialize`).
        match unsafe { T::deserialize(engine, &artifact) } {
            Ok(loaded) => return (Ok(loaded), false),
            Err(e) => cache.reject(digest, T::KIND, &format!("{e:#}")),
        }
    }
    let compiled = T::compile(engine, bytes).map_err(compile_error);
    if let (Some((cache, digest)), Ok(compiled)) = (disk, &compiled) {
        match compiled.serialize() {
            Ok(artifact) => cache.store(digest, T::KIND, &artifact),
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize compiled code for the disk cache")
            }
        }
    }
    (compiled, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::AllocatorChoice;

    #[test]
    fn the_allocator_does_not_change_what_compiled_code_fits() {
        let allocation = |choice| Allocation {
            choice,
            tasks: 2,
            max_memory: 1 << 30,
        };
        let (pooled, active) = make_engine(false, &allocation(AllocatorChoice::Pooling)).unwrap();
        assert_eq!(active, Allocator::Pooling);
        let (on_demand, active) =
            make_engine(false, &allocation(AllocatorChoice::OnDemand)).unwrap();
        assert_eq!(active, Allocator::OnDemand);
        assert_eq!(fingerprint(&pooled), fingerprint(&on_demand));
        let (metered, _) = make_engine(true, &allocation(AllocatorChoice::OnDemand)).unwrap();
        assert_ne!(fingerprint(&metered), fingerprint(&on_demand));
    }

    /// Polls `ticks` every tick until `enough` says so, for at most 5 s.
    async fn ticks_until(engine: &WasmEngine, enough: impl Fn(u64) -> bool) -> u64 {
        for _ in 0..500 {
            let now = engine.epoch_ticks();
            if enough(now) {
                return now;
            }
            tokio::time::sleep(TICK).await;
        }
        panic!("the epoch stayed at {}", engine.epoch_ticks());
    }

    #[tokio::test]
    async fn the_epoch_advances_only_while_a_guest_may_run() {
        let (engine, _, _) = add_module();
        let guard = engine.ticking().expect("engine parts");
        ticks_until(&engine, |n| n >= 3).await;
        drop(guard);
        // Only the tick under way when the guard went may still come, however late the
        // ticker runs; an always-ticking loop would add one per tick of this window.
        let at_drop = engine.epoch_ticks();
        tokio::time::sleep(30 * TICK).await;
        let parked = engine.epoch_ticks();
        assert!(
            parked <= at_drop + 1,
            "ticking with no guest: {at_drop} → {parked}"
        );
        let again = engine.ticking().expect("engine parts");
        ticks_until(&engine, |n| n > parked + 2).await;
        drop(again);
    }

    #[test]
    fn only_an_import_that_reaches_a_directory_earns_a_scratch() {
        let engine = Engine::default();
        let module = |imports: &str| {
            let text = format!("(module {imports})");
            Files::of_module(&Module::new(&engine, text).expect("module"))
        };
        let prestat = r#"(import "wasi_snapshot_preview1" "fd_prestat_get" (func (param i32 i32) (result i32)))"#;
        let open = r#"(import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#;
        assert_eq!(module(""), Files::Unreached);
        assert_eq!(module(prestat), Files::Unreached);
        assert_eq!(module(&format!("{prestat} {open}")), Files::Reached);
        let component = |imports: &str| {
            let text = format!("(component {imports})");
            let component = Component::new(&engine, text).expect("component");
            Files::of_component(&component, &engine)
        };
        assert_eq!(component(""), Files::Unreached);
        let types = r#"(import "wasi:filesystem/types@0.2.6" (instance))"#;
        assert_eq!(component(types), Files::Unreached);
        let preopens = r#"(import "wasi:filesystem/preopens@0.2.6" (instance))"#;
        assert_eq!(component(preopens), Files::Reached);
    }

    const ADD: &str = r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#;

    /// An engine with default limits, and the `add` module with its digest.
    fn add_module() -> (Arc<WasmEngine>, Arc<[u8]>, Digest) {
        let engine = WasmEngine::new(
            CacheLimits::default(),
            false,
            SandboxLimits::default(),
            Metrics::default(),
            ScratchRoot::create().expect("scratch root"),
        );
        let bytes: Arc<[u8]> = wat::parse_str(ADD).expect("wat").into();
        let digest = Digest::of(&bytes);
        (Arc::new(engine), bytes, digest)
    }

    /// Compiles a distinct small module, the `n`th.
    async fn compile_nth(engine: &Arc<WasmEngine>, n: usize) {
        let text = format!(r#"(module (func (export "f{n}")))"#);
        let bytes: Arc<[u8]> = wat::parse_str(&text).expect("wat").into();
        engine
            .prepare(&Digest::of(&bytes), bytes)
            .await
            .expect("compiles");
    }

    #[tokio::test]
    async fn an_abandoned_compile_finishes_into_the_cache() {
        let (engine, bytes, digest) = add_module();
        let abandoned = engine.prepare(&digest, bytes.clone());
        assert!(
            tokio::time::timeout(Duration::from_nanos(1), abandoned)
                .await
                .is_err(),
            "given up before the compile could finish"
        );
        engine.prepare(&digest, bytes).await.expect("compiles");
        assert_eq!(engine.compiles(), 1, "the abandoned compile was not redone");
    }

    #[tokio::test]
    async fn a_module_is_compiled_once_per_digest() {
        let (engine, bytes, digest) = add_module();
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
        let engine = Arc::new(WasmEngine::new(
            CacheLimits {
                entries: 2,
                bytes: 1 << 30,
                disk: None,
            },
            true,
            SandboxLimits::default(),
            Metrics::default(),
            ScratchRoot::create().expect("scratch root"),
        ));
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
            compile_nth(&engine, n).await;
        }
        assert!(engine.lock_cache().len() <= 2);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_by_compiled_bytes() {
        let limits = CacheLimits {
            entries: 100,
            bytes: 1,
            disk: None,
        };
        let engine = Arc::new(WasmEngine::new(
            limits,
            false,
            SandboxLimits::default(),
            Metrics::default(),
            ScratchRoot::create().expect("scratch root"),
        ));
        for n in 0..3 {
            compile_nth(&engine, n).await;
            assert_eq!(engine.lock_cache().len(), 1, "only the newest is kept");
        }
    }

    fn disk_engine(dir: &std::path::Path, fuel: bool) -> Arc<WasmEngine> {
        let limits = CacheLimits {
            disk: Some(DiskCacheConfig {
                dir: dir.to_owned(),
                max_bytes: 1 << 30,
            }),
            ..Default::default()
        };
        Arc::new(WasmEngine::new(
            limits,
            fuel,
            SandboxLimits::default(),
            Metrics::default(),
            ScratchRoot::create().expect("scratch root"),
        ))
    }

    /// The entry files under `dir`, of every engine fingerprint.
    fn entry_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let dirs = std::fs::read_dir(dir).expect("cache dir").flatten();
        let files = dirs.flat_map(|d| std::fs::read_dir(d.path()).expect("dir").flatten());
        files.map(|f| f.path()).collect()
    }

    #[tokio::test]
    async fn a_second_engine_loads_what_the_first_compiled_and_no_other_engine_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, bytes, digest) = add_module();
        let first = disk_engine(dir.path(), false);
        first
            .prepare(&digest, bytes.clone())
            .await
            .expect("compiled");
        assert_eq!(first.compiles(), 1);
        let second = disk_engine(dir.path(), false);
        let loaded = second
            .prepare(&digest, bytes.clone())
            .await
            .expect("loaded");
        assert!(matches!(loaded, Prepared::Core(..)));
        assert_eq!(second.compiles(), 0, "loaded from disk, not compiled");
        // Another engine configuration (fuel metering) has a fingerprint of its own.
        let metered = disk_engine(dir.path(), true);
        metered.prepare(&digest, bytes).await.expect("compiled");
        assert_eq!(metered.compiles(), 1);
        assert_eq!(entry_files(dir.path()).len(), 2);
    }

    #[tokio::test]
    async fn an_entry_wasmtime_refuses_is_compiled_again_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, bytes, digest) = add_module();
        disk_engine(dir.path(), false)
            .prepare(&digest, bytes.clone())
            .await
            .expect("compiled");
        // Intact as far as our checksum goes, but not something Wasmtime wrote.
        let [entry] = entry_files(dir.path()).try_into().expect("one entry");
        let config = DiskCacheConfig {
            dir: dir.path().to_owned(),
            max_bytes: 1 << 30,
        };
        let fingerprint = entry
            .parent()
            .and_then(|p| p.file_name())
            .expect("fingerprint");
        let cache = DiskCache::open(&config, &fingerprint.to_string_lossy()).expect("open");
        cache.store(&digest, Kind::Module, b"\x7fELF but not a compiled module");
        let engine = disk_engine(dir.path(), false);
        engine
            .prepare(&digest, bytes)
            .await
            .expect("compiled again");
        assert_eq!(engine.compiles(), 1);
        let artifact = cache.load(&digest, Kind::Module).expect("replaced");
        assert!(artifact.len() > 100, "a real artifact again");
    }
}
