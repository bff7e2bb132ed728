//! The pool of workers the coordinator places compiles on, and the
//! compile stack composed over it.

use super::*;

/// The workers the coordinator knows: a façade over the core
/// [`Registry`] that the network layer (registration RPCs, discovery,
/// status pages) uses, plus each worker's circuit.
pub struct WorkerPool {
    registry: Registry,
    circuits: Arc<Mutex<HashMap<WorkerId, CircuitHandle>>>,
    channel: ChannelOptions,
    connector: Option<Connector>,
    heartbeat_ttl: Duration,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.registry.len())
            .field("heartbeat_ttl", &self.heartbeat_ttl)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// An empty pool whose handshake workers expire after `heartbeat_ttl`
    /// without a heartbeat; `channel` is how workers are dialled.
    pub fn new(heartbeat_ttl: Duration, channel: ChannelOptions) -> Self {
        WorkerPool {
            registry: Registry::new(),
            circuits: Arc::new(Mutex::new(HashMap::new())),
            channel,
            connector: None,
            heartbeat_ttl,
        }
    }

    /// Calls workers through `connector` instead of dialling them with
    /// gRPC (an in-process benchmark's no-op workers, for instance).
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// How workers are dialled (timeouts, TLS, token).
    pub fn channel_options(&self) -> ChannelOptions {
        self.channel.clone()
    }

    /// The registry behind the pool (the scheduler subscribes to it).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds or updates a worker. A worker known under the same id or the
    /// same address is replaced, never duplicated.
    pub fn register(&self, info: WorkerInfo) -> Result<(), GridError> {
        addr::parse_host_port(&info.address).map_err(|e| GridError::InvalidTask(e.to_string()))?;
        self.registry.register(info);
        self.update_gauge();
        Ok(())
    }

    /// Records a heartbeat; false if the worker is unknown.
    pub fn heartbeat(&self, id: &WorkerId) -> bool {
        self.registry.heartbeat(id)
    }

    /// Removes a worker, logging why.
    pub fn remove(&self, id: &WorkerId, reason: &str) -> bool {
        let removed = self.registry.remove(id, reason).is_some();
        if removed {
            if let Ok(mut c) = self.circuits.lock() {
                c.remove(id);
            }
            self.update_gauge();
        }
        removed
    }

    /// Removes handshake workers whose last heartbeat is older than the
    /// TTL. Static and mDNS workers are kept alive by their discovery
    /// sources, which remove them when they stop answering.
    pub fn expire(&self) -> Vec<WorkerId> {
        for snap in self.registry.snapshot() {
            if !snap.sources.contains(&WorkerSource::Handshake) {
                self.registry.heartbeat(&snap.worker.info.id);
            }
        }
        let gone: Vec<WorkerId> = self
            .registry
            .expire(self.heartbeat_ttl)
            .into_iter()
            .map(|w| w.id)
            .collect();
        if !gone.is_empty() {
            if let Ok(mut c) = self.circuits.lock() {
                for id in &gone {
                    c.remove(id);
                }
            }
            self.update_gauge();
        }
        gone
    }

    /// Every worker, sorted by id.
    pub fn entries(&self) -> Vec<PoolEntry> {
        let circuits = self.circuits.lock().map(|c| c.clone()).unwrap_or_default();
        let mut v: Vec<PoolEntry> = self
            .registry
            .snapshot()
            .into_iter()
            .map(|s| PoolEntry {
                circuit: circuits.get(&s.worker.info.id).map(CircuitHandle::state),
                info: s.worker.info,
                stats: s.worker.stats,
            })
            .collect();
        v.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        v
    }

    fn update_gauge(&self) {
        metrics::gauge!("hybridgrid_workers", "state" => "healthy").set(self.registry.len() as f64);
    }

    /// The per-worker service the scheduler calls: a gRPC client guarded by
    /// the worker's circuit breaker (remembered for status pages).
    pub fn endpoint(
        &self,
        w: RegisteredWorker,
        breaker: &CircuitBreakerConfig,
    ) -> Endpoint<BoxCompile> {
        let id = w.info.id.clone();
        let client = match &self.connector {
            Some(connect) => connect(&w.info),
            None => WorkerClient::new(id.clone(), &w.info.address, &self.channel)
                .map(BoxCloneSyncService::new),
        };
        let client: BoxCompile = match client {
            Ok(c) => c,
            Err(e) => BoxCloneSyncService::new(tower::service_fn(move |_t: CompileTask| {
                let e = e.clone();
                async move { Err::<CompileOutput, BoxError>(e.into()) }
            })),
        };
        let ep = Endpoint::with_breaker(w, client, breaker.clone());
        if let (Some(c), Ok(mut map)) = (&ep.circuit, self.circuits.lock()) {
            map.insert(id, c.clone());
        }
        Endpoint {
            worker: ep.worker,
            circuit: ep.circuit,
            service: BoxCloneSyncService::new(ep.service),
        }
    }
}

/// Composes the coordinator's compile stack over the workers of `state`,
/// as DESIGN.md orders it: admission -> (cache, added by the caller
/// inside) -> retry on another worker -> hedging -> scheduler (capability
/// filter, algorithm, open circuits skipped) -> per-worker circuit breaker
/// -> gRPC client. `cache` wraps the retry stack (e.g. a `CacheLayer`);
/// pass `|s| s` for none. The tasks the stack keeps waiting (for admission,
/// or held by the cost-aware scheduler for a free slot) are what `state`
/// reports as queued.
pub fn compose_stack(
    state: &CoordinatorState,
    cfg: &hybridgrid_core::config::Config,
    cache: impl FnOnce(BoxCompile) -> BoxCompile,
) -> BoxCompile {
    let breaker = cfg.resilience.circuit_breaker.clone();
    let p = state.pool.clone();
    let endpoints = Endpoints::new(
        state.pool.registry().subscribe(),
        move |w: RegisteredWorker| p.endpoint(w, &breaker),
    );
    let scheduler = Scheduler::new(endpoints, &cfg.scheduler);
    let held = scheduler.clone();
    let hedge = Hedge::new(scheduler.clone(), scheduler, cfg.scheduler.hedge.clone());
    let retry = BoxCloneSyncService::new(Retry::new(hedge, cfg.resilience.retry.clone()));
    let admission = Admission::from_config(cache(retry), &cfg.coordinator);
    let waiting = admission.counts();
    state
        .waiting
        .set(move || (waiting.queued() + held.held()) as u64);
    BoxCloneSyncService::new(admission)
}
