//! What makes a repeated sync cheap: the devices that synced lately, by the
//! hash of their token, and one shared read of each tenant's versions.
//!
//! A device read from the store is reused only while its tenant's
//! `device_trust` version is the one it was read at. Every change made to a
//! device by anyone but its own syncs (approval, attested ownership, removal)
//! moves that version in the change's transaction, so a cached device is as
//! good as a fresh read. A change to settings, the directory or grants moves
//! only the tenant's `data_version`: the device stays cached, and the sync
//! waits for a snapshot at least that new.
//! Both versions are asked of the store by a read that starts after the sync
//! arrived, shared by every sync of the tenant waiting at that moment: no
//! sync trusts a version older than its own arrival, which keeps the
//! multi-node guarantees (no stale grant after an acknowledged save, a removed
//! device's token refused at once, whichever node answers), at one read per
//! burst instead of one per sync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use entitle_store::{Device, Store, StoreResult, TenantVersions};

use crate::snapshot::PreparedPolicy;

/// A device as the sync path knows it, with the last policy prepared for it.
#[derive(Debug)]
pub(crate) struct KnownDevice {
    /// The SHA-256 of its token (the cache's key).
    pub token_hash: String,
    /// The device as stored when read (plus what its syncs wrote since).
    pub device: Device,
    /// The tenant's `device_trust` version when the device was read.
    pub device_trust: i64,
    /// The last policy prepared for it, and from what.
    memo: Mutex<Option<Memo>>,
}

/// A prepared policy and what it was prepared from: reusing it for the same
/// request body against the same snapshot answers exactly what a fresh
/// evaluation would, without parsing, evaluating or serialising again.
/// The JSON is kept only while the device may not hold the policy yet (it was
/// answered 200): a device that holds it syncs with its ETag and needs none.
#[derive(Debug, Clone)]
struct Memo {
    snapshot: u64,
    body: Box<[u8]>,
    etag: Arc<str>,
    json: Option<Bytes>,
}

/// What a device's last sync prepared: the ETag, and the JSON if kept.
pub(crate) struct Remembered {
    pub etag: Arc<str>,
    pub json: Option<Bytes>,
}

impl KnownDevice {
    pub(crate) fn new(token_hash: String, device: Device, device_trust: i64) -> Self {
        Self {
            token_hash,
            device,
            device_trust,
            memo: Mutex::new(None),
        }
    }

    /// The policy prepared from snapshot `snapshot` for a sync whose body was
    /// exactly `body`, if that is the last one prepared.
    pub(crate) fn memo(&self, snapshot: u64, body: &[u8]) -> Option<Remembered> {
        let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        memo.as_ref()
            .filter(|m| m.snapshot == snapshot && *m.body == *body)
            .map(|m| Remembered {
                etag: m.etag.clone(),
                json: m.json.clone(),
            })
    }

    /// Remembers the policy prepared from `snapshot` for the body of the last
    /// sync (a held sync woken by a change): the device's next sync, with the
    /// same body, is then answered without deciding again.
    pub(crate) fn remember_again(&self, snapshot: u64, etag: Arc<str>) {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(memo) = memo.as_mut() {
            memo.snapshot = snapshot;
            memo.etag = etag;
            memo.json = None;
        }
    }

    /// Remembers the policy prepared from `snapshot` for `body`, with its
    /// JSON only if `keep_json` (the device was not known to hold it).
    pub(crate) fn remember(
        &self,
        snapshot: u64,
        body: &[u8],
        policy: &PreparedPolicy,
        keep_json: bool,
    ) {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        *memo = Some(Memo {
            snapshot,
            body: body.into(),
            etag: policy.etag.clone(),
            json: keep_json.then(|| policy.json.clone()),
        });
    }
}

/// The devices that synced lately (bounded) and each tenant's version gate.
pub(crate) struct SyncCache {
    devices: quick_cache::sync::Cache<String, Arc<KnownDevice>>,
    gates: RwLock<HashMap<String, Arc<VersionGate>>>,
    /// Counts the versions reads that reached the store.
    version_reads: prometheus_client::metrics::counter::Counter,
}

impl SyncCache {
    /// A cache of at most `capacity` devices (at least one), counting its
    /// versions reads in `version_reads`.
    pub(crate) fn new(
        capacity: usize,
        version_reads: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            devices: quick_cache::sync::Cache::new(capacity.max(1)),
            gates: RwLock::new(HashMap::new()),
            version_reads,
        }
    }

    /// The device with this token hash, if it synced lately.
    pub(crate) fn device(&self, token_hash: &str) -> Option<Arc<KnownDevice>> {
        self.devices.get(token_hash)
    }

    /// Keeps a device for its next sync.
    pub(crate) fn insert(&self, known: Arc<KnownDevice>) {
        self.devices.insert(known.token_hash.clone(), known);
    }

    /// Forgets a device (its token no longer opens anything).
    pub(crate) fn forget(&self, token_hash: &str) {
        self.devices.remove(token_hash);
    }

    /// The tenant's versions, read by a store read that started after this
    /// call did.
    pub(crate) async fn versions(
        &self,
        store: &dyn Store,
        tenant_id: &str,
    ) -> StoreResult<TenantVersions> {
        self.gate(tenant_id)
            .current(store, tenant_id, &self.version_reads)
            .await
    }

    fn gate(&self, tenant_id: &str) -> Arc<VersionGate> {
        if let Some(gate) = self
            .gates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant_id)
        {
            return gate.clone();
        }
        self.gates
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant_id.to_owned())
            .or_default()
            .clone()
    }
}

/// One tenant's shared versions read. A caller takes a ticket on arrival;
/// one read runs at a time, and a read covers every ticket taken before it
/// started, so a caller returns the result of the first read that began after
/// it arrived: it may wait for one read in flight and then one more, never
/// for a read that began before it came.
#[derive(Default)]
struct VersionGate {
    arrived: AtomicU64,
    covered: AtomicU64,
    // Written and read only under `reading`.
    data: AtomicI64,
    device_trust: AtomicI64,
    reading: tokio::sync::Mutex<()>,
}

impl VersionGate {
    async fn current(
        &self,
        store: &dyn Store,
        tenant_id: &str,
        reads: &prometheus_client::metrics::counter::Counter,
    ) -> StoreResult<TenantVersions> {
        let ticket = self.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.reading.lock().await;
        if self.covered.load(Ordering::SeqCst) >= ticket {
            return Ok(TenantVersions {
                data: self.data.load(Ordering::SeqCst),
                device_trust: self.device_trust.load(Ordering::SeqCst),
            });
        }
        let covering = self.arrived.load(Ordering::SeqCst);
        reads.inc();
        let versions = store.versions(tenant_id).await?;
        self.data.store(versions.data, Ordering::SeqCst);
        self.device_trust
            .store(versions.device_trust, Ordering::SeqCst);
        self.covered.store(covering, Ordering::SeqCst);
        Ok(versions)
    }
}
