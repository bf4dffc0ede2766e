//! A deterministic in-memory SQL Server for tests and benchmarks: tables with primary keys, CDC
//! capture instances filled by a capture job that can be stopped (changes then wait in the "log"
//! until it runs again, and `fn_cdc_get_max_lsn` does not move), cleanup that raises an
//! instance's minimum LSN, schema changes that leave an old instance without the new column, and
//! Change Tracking with net changes and a minimum valid version. It answers the connector's
//! [`SqlServerSource`] questions with the documented semantics of the real functions.

use super::lsn::Lsn;
use super::source::{
    CaptureInstance, CaptureJob, CdcRow, CtRow, SqlServerSource, TableRef, TrackedTable,
};
use crate::CdcError;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone)]
struct SimTable {
    key_columns: Vec<String>,
    columns: Vec<String>,
    rows: BTreeMap<String, Map<String, Value>>,
    ct: Option<SimTracking>,
}

/// A tracked row: (key, creation version if inserted while tracked, last version, deleted).
type Tracked = (Map<String, Value>, Option<i64>, i64, bool);

#[derive(Debug, Clone, Default)]
struct SimTracking {
    min_valid: i64,
    /// canonical key → its tracking entry
    changes: BTreeMap<String, Tracked>,
}

#[derive(Debug, Clone)]
struct SimInstance {
    info: CaptureInstance,
    min_lsn: Lsn,
    rows: Vec<CdcRow>,
}

/// A change as written to the log, before the capture job copies it into change tables.
#[derive(Debug, Clone)]
struct LogChange {
    table: TableRef,
    seqval: Lsn,
    op: u8,
    row: Map<String, Value>,
}

#[derive(Debug, Clone)]
struct LogTxn {
    lsn: Lsn,
    commit_ms: i64,
    changes: Vec<LogChange>,
}

#[derive(Default)]
struct State {
    tables: BTreeMap<TableRef, SimTable>,
    instances: Vec<SimInstance>,
    /// `cdc.lsn_time_mapping`: commit LSNs the capture job has processed.
    mapping: Vec<(Lsn, i64)>,
    /// Transactions not yet harvested by the capture job.
    log: VecDeque<LogTxn>,
    next_lsn: u128,
    job_running: bool,
    ct_enabled: bool,
    ct_version: i64,
    clock_ms: i64,
    /// Source calls still to fail (a dropped connection, a server error).
    failures: VecDeque<String>,
    calls: u64,
}

/// A simulated SQL Server database. Cheap to share: `Arc<Simulator>` implements the source trait.
pub struct Simulator {
    state: Mutex<State>,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

/// One row operation inside [`Simulator::transaction`].
#[derive(Debug, Clone)]
pub enum SimOp {
    Insert(TableRef, Map<String, Value>),
    /// New values for some columns of the row with this key.
    Update(TableRef, Map<String, Value>, Map<String, Value>),
    Delete(TableRef, Map<String, Value>),
}

fn canon(key_columns: &[String], row: &Map<String, Value>) -> String {
    let key: Map<String, Value> = key_columns
        .iter()
        .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    crate::canonical_key(&key)
}

fn project(columns: &[String], row: &Map<String, Value>) -> Map<String, Value> {
    columns
        .iter()
        .map(|c| (c.clone(), row.get(c).cloned().unwrap_or(Value::Null)))
        .collect()
}

impl Simulator {
    pub fn new() -> Self {
        Simulator {
            state: Mutex::new(State {
                next_lsn: 0x0000_002a_0000_0100_0001,
                job_running: true,
                clock_ms: 1_767_225_600_000,
                ..State::default()
            }),
        }
    }

    pub fn create_table(&self, table: TableRef, key_columns: &[&str], columns: &[&str]) {
        self.state.lock().tables.insert(
            table,
            SimTable {
                key_columns: key_columns.iter().map(|s| s.to_string()).collect(),
                columns: columns.iter().map(|s| s.to_string()).collect(),
                rows: BTreeMap::new(),
                ct: None,
            },
        );
    }

    /// `ALTER TABLE … ADD column`: existing capture instances do not capture it.
    pub fn add_column(&self, table: &TableRef, column: &str) {
        let mut s = self.state.lock();
        if let Some(t) = s.tables.get_mut(table) {
            t.columns.push(column.to_string());
            for r in t.rows.values_mut() {
                r.insert(column.to_string(), Value::Null);
            }
        }
    }

    /// `sys.sp_cdc_enable_table`: a new capture instance of the table's current columns, valid
    /// from the next LSN.
    pub fn enable_cdc(&self, table: &TableRef, instance: &str) {
        let mut s = self.state.lock();
        Self::harvest(&mut s);
        let start = Lsn::from_u128(s.next_lsn);
        let t = s.tables.get(table).expect("table exists").clone();
        s.instances.push(SimInstance {
            info: CaptureInstance {
                name: instance.to_string(),
                table: table.clone(),
                start_lsn: start,
                key_columns: t.key_columns.clone(),
                captured_columns: t.columns.clone(),
            },
            min_lsn: start,
            rows: Vec::new(),
        });
        // Enabling a table is itself a logged transaction.
        s.next_lsn += 0x1000;
    }

    /// `sys.sp_cdc_disable_table @capture_instance = …`.
    pub fn drop_instance(&self, instance: &str) {
        self.state
            .lock()
            .instances
            .retain(|i| i.info.name != instance);
    }

    pub fn enable_change_tracking(&self, table: &TableRef) {
        let mut s = self.state.lock();
        s.ct_enabled = true;
        let v = s.ct_version;
        if let Some(t) = s.tables.get_mut(table) {
            t.ct = Some(SimTracking {
                min_valid: v,
                changes: BTreeMap::new(),
            });
        }
    }

    /// Starts or stops the SQL Server Agent capture job.
    pub fn set_capture_job(&self, running: bool) {
        let mut s = self.state.lock();
        s.job_running = running;
        Self::harvest(&mut s);
    }

    /// The CDC cleanup job: removes change rows below `lsn` from every instance and raises their
    /// minimum LSN to it.
    pub fn cleanup_cdc(&self, lsn: Lsn) {
        let mut s = self.state.lock();
        for i in &mut s.instances {
            if lsn > i.min_lsn {
                i.min_lsn = lsn;
                i.rows.retain(|r| r.start_lsn >= lsn);
            }
        }
        s.mapping.retain(|(l, _)| *l >= lsn);
    }

    /// Change Tracking auto-cleanup up to `version`.
    pub fn cleanup_change_tracking(&self, version: i64) {
        let mut s = self.state.lock();
        for t in s.tables.values_mut() {
            if let Some(ct) = &mut t.ct {
                ct.min_valid = ct.min_valid.max(version);
                ct.changes.retain(|_, c| c.2 > version);
            }
        }
    }

    /// The next `n` source calls fail with `message` (connection drops, server errors).
    pub fn fail_next(&self, n: usize, message: &str) {
        let mut s = self.state.lock();
        for _ in 0..n {
            s.failures.push_back(message.to_string());
        }
    }

    pub fn calls(&self) -> u64 {
        self.state.lock().calls
    }

    /// The commit LSN of the last transaction (captured or not).
    pub fn last_lsn(&self) -> Lsn {
        let s = self.state.lock();
        Lsn::from_u128(s.next_lsn.saturating_sub(0x1000))
    }

    pub fn rows(&self, table: &TableRef) -> Vec<Map<String, Value>> {
        self.state
            .lock()
            .tables
            .get(table)
            .map(|t| t.rows.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Commits the operations as one transaction; returns its commit LSN. Panics on an
    /// operation a real server would reject (duplicate key, missing row, unknown table), so a
    /// test can never silently drift from what it meant.
    pub fn transaction(&self, ops: Vec<SimOp>) -> Lsn {
        let mut s = self.state.lock();
        let lsn = Lsn::from_u128(s.next_lsn);
        s.next_lsn += 0x1000;
        s.clock_ms += 7;
        let commit_ms = s.clock_ms;
        let has_ct = ops.iter().any(|op| {
            let t = match op {
                SimOp::Insert(t, _) | SimOp::Update(t, _, _) | SimOp::Delete(t, _) => t,
            };
            s.tables.get(t).is_some_and(|t| t.ct.is_some())
        });
        let version = if has_ct {
            s.ct_version += 1;
            s.ct_version
        } else {
            s.ct_version
        };
        let mut changes = Vec::new();
        // seqval: the LSN of the change record inside the transaction (below the commit LSN).
        let mut seq: u128 = lsn.to_u128() - 0x1000;
        for op in ops {
            seq += 1;
            let seqval = Lsn::from_u128(seq);
            match op {
                SimOp::Insert(table, row) => {
                    let t = s.tables.get_mut(&table).expect("unknown table");
                    let row = project(&t.columns, &row);
                    let k = canon(&t.key_columns, &row);
                    assert!(!t.rows.contains_key(&k), "duplicate key {k}");
                    t.rows.insert(k.clone(), row.clone());
                    if let Some(ct) = &mut t.ct {
                        let key = project(&t.key_columns, &row);
                        ct.changes.insert(k, (key, Some(version), version, false));
                    }
                    changes.push(LogChange {
                        table,
                        seqval,
                        op: 2,
                        row,
                    });
                }
                SimOp::Update(table, key, set) => {
                    let t = s.tables.get_mut(&table).expect("unknown table");
                    let k = canon(&t.key_columns, &key);
                    let old = t.rows.get(&k).expect("update of a missing row").clone();
                    let mut new = old.clone();
                    for (c, v) in set {
                        new.insert(c, v);
                    }
                    let nk = canon(&t.key_columns, &new);
                    assert_eq!(nk, k, "the simulator does not change keys");
                    t.rows.insert(k.clone(), new.clone());
                    if let Some(ct) = &mut t.ct {
                        let key = project(&t.key_columns, &new);
                        let created = ct.changes.get(&k).and_then(|c| c.1);
                        ct.changes.insert(k, (key, created, version, false));
                    }
                    changes.push(LogChange {
                        table: table.clone(),
                        seqval,
                        op: 3,
                        row: old,
                    });
                    changes.push(LogChange {
                        table,
                        seqval,
                        op: 4,
                        row: new,
                    });
                }
                SimOp::Delete(table, key) => {
                    let t = s.tables.get_mut(&table).expect("unknown table");
                    let k = canon(&t.key_columns, &key);
                    let old = t.rows.remove(&k).expect("delete of a missing row");
                    if let Some(ct) = &mut t.ct {
                        let key = project(&t.key_columns, &old);
                        ct.changes.insert(k, (key, None, version, true));
                    }
                    changes.push(LogChange {
                        table,
                        seqval,
                        op: 1,
                        row: old,
                    });
                }
            }
        }
        s.log.push_back(LogTxn {
            lsn,
            commit_ms,
            changes,
        });
        Self::harvest(&mut s);
        lsn
    }

    /// What the capture job does: copies logged transactions into every capture instance of
    /// their table that was valid at the transaction's LSN, and records the commit LSN.
    fn harvest(s: &mut State) {
        if !s.job_running {
            return;
        }
        while let Some(txn) = s.log.pop_front() {
            let mut any = false;
            for c in &txn.changes {
                for i in s.instances.iter_mut() {
                    if i.info.table == c.table && i.info.start_lsn <= txn.lsn {
                        any = true;
                        i.rows.push(CdcRow {
                            start_lsn: txn.lsn,
                            seqval: c.seqval,
                            operation: c.op,
                            commit_ms: Some(txn.commit_ms),
                            row: project(&i.info.captured_columns, &c.row),
                        });
                    }
                }
            }
            if any {
                s.mapping.push((txn.lsn, txn.commit_ms));
            }
        }
    }

    fn enter(&self) -> Result<parking_lot::MutexGuard<'_, State>, CdcError> {
        let mut s = self.state.lock();
        s.calls += 1;
        match s.failures.pop_front() {
            Some(m) => Err(CdcError::Source(m)),
            None => Ok(s),
        }
    }
}

#[async_trait]
impl SqlServerSource for Simulator {
    async fn ping(&self) -> Result<(), CdcError> {
        self.enter().map(|_| ())
    }

    async fn database_flags(&self) -> Result<(bool, bool), CdcError> {
        let s = self.enter()?;
        Ok((!s.instances.is_empty(), s.ct_enabled))
    }

    async fn capture_instances(
        &self,
        schema: &str,
        tables: &[String],
    ) -> Result<Vec<CaptureInstance>, CdcError> {
        let s = self.enter()?;
        let mut out: Vec<CaptureInstance> = s
            .instances
            .iter()
            .filter(|i| i.info.table.schema == schema)
            .filter(|i| tables.is_empty() || tables.contains(&i.info.table.name))
            .map(|i| i.info.clone())
            .collect();
        out.sort_by(|a, b| (a.start_lsn, &a.name).cmp(&(b.start_lsn, &b.name)));
        Ok(out)
    }

    async fn capture_job(&self) -> Result<CaptureJob, CdcError> {
        let s = self.enter()?;
        Ok(if s.job_running {
            CaptureJob::Running
        } else {
            CaptureJob::NotRunning(
                "the CDC capture job is not executing: start SQL Server Agent (or \
                 sys.sp_cdc_start_job)"
                    .into(),
            )
        })
    }

    async fn max_lsn(&self) -> Result<Lsn, CdcError> {
        let s = self.enter()?;
        Ok(s.mapping.last().map(|m| m.0).unwrap_or(Lsn::ZERO))
    }

    async fn min_lsn(&self, instance: &str) -> Result<Lsn, CdcError> {
        let s = self.enter()?;
        Ok(s.instances
            .iter()
            .find(|i| i.info.name == instance)
            .map(|i| i.min_lsn)
            .unwrap_or(Lsn::ZERO))
    }

    async fn window_end(&self, after: Lsn, max: Lsn, transactions: u32) -> Result<Lsn, CdcError> {
        let s = self.enter()?;
        Ok(s.mapping
            .iter()
            .filter(|(l, _)| *l > after && *l <= max)
            .take(transactions as usize)
            .last()
            .map(|m| m.0)
            .unwrap_or(max))
    }

    async fn cdc_changes(
        &self,
        instance: &CaptureInstance,
        after: Lsn,
        to: Lsn,
    ) -> Result<Vec<CdcRow>, CdcError> {
        let s = self.enter()?;
        let Some(i) = s.instances.iter().find(|i| i.info.name == instance.name) else {
            return Err(CdcError::Source(format!(
                "error 208: Invalid object name 'cdc.fn_cdc_get_all_changes_{}'",
                instance.name
            )));
        };
        // The real function raises error 313 when the range starts below the minimum.
        if after.increment() < i.min_lsn || to < after.increment() {
            return Err(CdcError::Source(
                "error 313: An insufficient number of arguments were supplied for the \
                 procedure or function cdc.fn_cdc_get_all_changes_ ..."
                    .into(),
            ));
        }
        let mut rows: Vec<CdcRow> = i
            .rows
            .iter()
            .filter(|r| r.start_lsn > after && r.start_lsn <= to)
            .cloned()
            .collect();
        rows.sort_by(|a, b| {
            (a.start_lsn, a.seqval, a.operation).cmp(&(b.start_lsn, b.seqval, b.operation))
        });
        Ok(rows)
    }

    async fn tracked_tables(
        &self,
        schema: &str,
        tables: &[String],
    ) -> Result<Vec<TrackedTable>, CdcError> {
        let s = self.enter()?;
        Ok(s.tables
            .iter()
            .filter(|(t, _)| t.schema == schema)
            .filter(|(t, st)| {
                if tables.is_empty() {
                    st.ct.is_some()
                } else {
                    tables.contains(&t.name)
                }
            })
            .map(|(t, st)| TrackedTable {
                table: t.clone(),
                key_columns: st.key_columns.clone(),
            })
            .collect())
    }

    async fn ct_current_version(&self) -> Result<Option<i64>, CdcError> {
        let s = self.enter()?;
        Ok(s.ct_enabled.then_some(s.ct_version))
    }

    async fn ct_min_valid_version(&self, table: &TableRef) -> Result<Option<i64>, CdcError> {
        let s = self.enter()?;
        Ok(s.tables
            .get(table)
            .and_then(|t| t.ct.as_ref())
            .map(|c| c.min_valid))
    }

    async fn ct_changes(
        &self,
        table: &TrackedTable,
        since: i64,
        upto: i64,
    ) -> Result<Vec<CtRow>, CdcError> {
        let s = self.enter()?;
        let t = s
            .tables
            .get(&table.table)
            .ok_or_else(|| CdcError::Source("error 208: Invalid object name".into()))?;
        let ct = t.ct.as_ref().ok_or_else(|| {
            CdcError::Source(format!(
                "error 4997: Cannot obtain change information for table {} because change \
                 tracking is not enabled on it",
                table.table.display()
            ))
        })?;
        let mut out: Vec<CtRow> = ct
            .changes
            .iter()
            .filter(|(_, c)| c.2 > since && c.2 <= upto)
            .map(|(k, (key, created, last, deleted))| {
                let operation = if *deleted {
                    'D'
                } else if created.is_some_and(|c| c > since) {
                    'I'
                } else {
                    'U'
                };
                CtRow {
                    version: *last,
                    operation,
                    key: key.clone(),
                    row: if *deleted {
                        None
                    } else {
                        t.rows.get(k).cloned()
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (a.version, crate::canonical_key(&a.key))
                .cmp(&(b.version, crate::canonical_key(&b.key)))
        });
        Ok(out)
    }

    async fn primary_key(&self, table: &TableRef) -> Result<Vec<String>, CdcError> {
        let s = self.enter()?;
        Ok(s.tables
            .get(table)
            .map(|t| t.key_columns.clone())
            .unwrap_or_default())
    }

    async fn scan(
        &self,
        table: &TableRef,
        _key_columns: &[String],
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Map<String, Value>>, CdcError> {
        let s = self.enter()?;
        Ok(s.tables
            .get(table)
            .map(|t| {
                t.rows
                    .values()
                    .skip(offset as usize)
                    .take(limit as usize)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}
