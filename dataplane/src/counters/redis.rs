//! The Redis counter store: a single node (through a reconnecting multiplexed connection) or a
//! Redis Cluster. Calls the `llmgate_v1` functions; loads them when Redis does not know them yet
//! (a new or restarted server).
//!
//! Keys are `llmgate:v1:{tag}:…`. A request's counters normally share one tag (the caller's
//! team), so one `FCALL` covers them even on a cluster. When they span tags (a limit shared by
//! everyone next to per-team ones) each tag group is admitted in turn and a refusal releases the
//! groups already admitted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Value};

use super::{BudgetSettled, Check, CheckKind, CheckState, Plan, SettleItem, StoreError, Verdict};

pub(crate) const LIBRARY: &str = include_str!("llmgate_v1.lua");
pub(crate) const ADMIT: &str = "llmgate_admit_v1";
pub(crate) const SETTLE: &str = "llmgate_settle_v1";

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where to connect.
#[derive(Clone, Debug)]
pub enum Target {
    Single(String),
    Cluster(Vec<String>),
}

pub struct RedisStore {
    target: Target,
    conn: ArcSwapOption<Conn>,
    timeout: Duration,
    /// One function load at a time: a fresh Redis meets a burst of requests.
    loading: tokio::sync::Mutex<()>,
}

impl RedisStore {
    pub fn new(target: Target, timeout: Duration) -> RedisStore {
        RedisStore {
            target,
            conn: ArcSwapOption::empty(),
            timeout,
            loading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn describe(&self) -> &'static str {
        match self.target {
            Target::Single(_) => "redis",
            Target::Cluster(_) => "redis-cluster",
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let conn = match &self.target {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(500))))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(ConnectionManager::new_with_config(client, cfg).await?)
            }
            Target::Cluster(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(self.timeout.max(Duration::from_millis(500)))
                    .response_timeout(self.timeout)
                    .retries(1)
                    .build()?;
                Conn::Cluster(client.get_async_connection().await?)
            }
        };
        Ok(conn)
    }

    /// The connection, made on first use (and again after `ping` finds it gone).
    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let c = tokio::time::timeout(self.timeout * 10, self.connect())
            .await
            .map_err(|_| StoreError::Timeout(self.timeout * 10))??;
        self.conn.store(Some(Arc::new(c.clone())));
        Ok(c)
    }

    async fn query(&self, cmd: &Cmd) -> Result<Value, StoreError> {
        let mut conn = self.conn().await?;
        let fut = async {
            match &mut conn {
                Conn::Single(c) => c.req_packed_command(cmd).await,
                Conn::Cluster(c) => c.req_packed_command(cmd).await,
            }
        };
        let v = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        // Error replies arrive as values; make them errors.
        Ok(v.extract_error()?)
    }

    /// Runs a function, loading the library first when the server does not have it.
    async fn fcall(&self, name: &str, keys: &[&str], args: &[String]) -> Result<Value, StoreError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(name).arg(keys.len()).arg(keys).arg(args);
        let missing = |r: &Result<Value, StoreError>| matches!(r, Err(StoreError::Redis(e)) if e.to_string().contains("Function not found"));
        let first = self.query(&cmd).await;
        if !missing(&first) {
            return first;
        }
        let _one = self.loading.lock().await;
        // Another request may have loaded it while this one waited.
        let again = self.query(&cmd).await;
        if !missing(&again) {
            return again;
        }
        self.load().await?;
        self.query(&cmd).await
    }

    async fn load(&self) -> Result<(), StoreError> {
        tracing::info!("loading the llmgate_v1 functions into Redis");
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(LIBRARY);
        self.query(&cmd).await.map(|_| ())
    }

    /// `SET key 1 NX EX ttl`: whether the key was new.
    pub async fn set_nx(&self, key: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg("1")
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs.max(1));
        Ok(matches!(
            self.query(&cmd).await?,
            Value::Okay | Value::SimpleString(_)
        ))
    }

    /// Marks `threshold` as alerted on the budget at `key` (the same `alert:<threshold>` field
    /// a settle that crosses it sets): the budget's spend when this call set it, `None` when it
    /// already was.
    pub async fn mark_alert(&self, key: &str, threshold: u8) -> Result<Option<i64>, StoreError> {
        let mut set = redis::cmd("HSETNX");
        set.arg(key)
            .arg(format!("alert:{threshold}"))
            .arg(jiff::Timestamp::now().as_microsecond());
        if !matches!(self.query(&set).await?, Value::Int(1)) {
            return Ok(None);
        }
        let mut get = redis::cmd("HGET");
        get.arg(key).arg("spent");
        Ok(Some(match self.query(&get).await? {
            Value::BulkString(b) => String::from_utf8_lossy(&b).parse().unwrap_or(0),
            Value::Int(n) => n,
            _ => 0,
        }))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let r = self.query(&redis::cmd("PING")).await;
        if r.is_err() && self.is_cluster() {
            // A cluster connection that lost every node does not come back on its own.
            self.conn.store(None);
        }
        r.map(|_| ())
    }

    pub async fn admit(&self, plan: &Plan) -> Result<Verdict, StoreError> {
        let single_tag = plan
            .candidates
            .iter()
            .flatten()
            .map(|c| &c.tag)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            <= 1;
        if !self.is_cluster() || single_tag {
            return self.admit_one(plan).await;
        }
        self.admit_by_tag(plan).await
    }

    async fn admit_one(&self, plan: &Plan) -> Result<Verdict, StoreError> {
        let mut keys: Vec<&str> = Vec::new();
        let mut args: Vec<String> = Vec::with_capacity(4 + 10 * plan.candidates.len());
        args.push(plan.rid.clone());
        args.push(plan.candidates.len().to_string());
        for checks in &plan.candidates {
            args.push(checks.len().to_string());
            for c in checks {
                let k = key_index(&c.key, &mut keys);
                match &c.kind {
                    CheckKind::Rate {
                        window_us,
                        limit,
                        cost,
                    } => {
                        args.push("r".into());
                        args.push(k.to_string());
                        args.push(window_us.to_string());
                        args.push(limit.to_string());
                        args.push(cost.to_string());
                    }
                    CheckKind::Budget {
                        holds_key,
                        limit,
                        cost,
                        hold_us,
                        expire_at_ms,
                        clamp,
                    } => {
                        let z = key_index(holds_key, &mut keys);
                        args.push("b".into());
                        args.push(k.to_string());
                        args.push(z.to_string());
                        args.push(limit.to_string());
                        args.push(cost.to_string());
                        args.push(hold_us.to_string());
                        args.push(expire_at_ms.to_string());
                        match clamp {
                            Some(cl) => {
                                args.push(cl.prompt_cost.to_string());
                                args.push(cl.out_price.to_string());
                                args.push(cl.min_tokens.max(1).to_string());
                            }
                            None => args.extend(["-".into(), "0".into(), "1".into()]),
                        }
                    }
                }
            }
        }
        let reply = self.fcall(ADMIT, &keys, &args).await?;
        parse_verdict(&reply, plan)
    }

    /// Cluster with counters under several tags: admit tag group by tag group.
    async fn admit_by_tag(&self, plan: &Plan) -> Result<Verdict, StoreError> {
        let mut last = Verdict::BudgetExhausted {
            candidate: 0,
            check: 0,
            left: 0,
        };
        'candidates: for (ci, checks) in plan.candidates.iter().enumerate() {
            let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, c) in checks.iter().enumerate() {
                groups.entry(&c.tag).or_default().push(i);
            }
            let mut states = vec![CheckState::default(); checks.len()];
            let mut admitted: Vec<usize> = Vec::new();
            for members in groups.values() {
                let sub = Plan {
                    rid: plan.rid.clone(),
                    candidates: vec![members.iter().map(|&i| checks[i].clone()).collect()],
                };
                match self.admit_one(&sub).await {
                    Ok(Verdict::Admitted { states: s, .. }) => {
                        for (&i, st) in members.iter().zip(s) {
                            states[i] = st;
                        }
                        admitted.extend(members);
                    }
                    Ok(Verdict::RateLimited {
                        check,
                        retry_after_us,
                        state,
                        ..
                    }) => {
                        self.release(plan, checks, &states, &admitted).await?;
                        return Ok(Verdict::RateLimited {
                            candidate: ci,
                            check: members[check],
                            retry_after_us,
                            state,
                        });
                    }
                    Ok(Verdict::BudgetExhausted { check, left, .. }) => {
                        self.release(plan, checks, &states, &admitted).await?;
                        last = Verdict::BudgetExhausted {
                            candidate: ci,
                            check: members[check],
                            left,
                        };
                        continue 'candidates;
                    }
                    Err(e) => {
                        let _ = self.release(plan, checks, &states, &admitted).await;
                        return Err(e);
                    }
                }
            }
            return Ok(Verdict::Admitted {
                candidate: ci,
                states,
            });
        }
        Ok(last)
    }

    async fn release(
        &self,
        plan: &Plan,
        checks: &[Check],
        states: &[CheckState],
        which: &[usize],
    ) -> Result<(), StoreError> {
        let items: Vec<SettleItem> = which
            .iter()
            .map(|&i| super::release_item(&checks[i], &plan.rid, states.get(i)))
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        self.settle(&items).await.map(|_| ())
    }

    /// Settles items, one call per tag (one call in all on a single node).
    pub async fn settle(
        &self,
        items: &[SettleItem],
    ) -> Result<Vec<Option<BudgetSettled>>, StoreError> {
        let mut out = vec![None; items.len()];
        if !self.is_cluster() {
            let all: Vec<usize> = (0..items.len()).collect();
            self.settle_group(items, &all, &mut out).await?;
            return Ok(out);
        }
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            groups.entry(it.tag()).or_default().push(i);
        }
        for members in groups.values() {
            self.settle_group(items, members, &mut out).await?;
        }
        Ok(out)
    }

    async fn settle_group(
        &self,
        items: &[SettleItem],
        members: &[usize],
        out: &mut [Option<BudgetSettled>],
    ) -> Result<(), StoreError> {
        let mut keys: Vec<&str> = Vec::new();
        let mut args: Vec<String> = Vec::with_capacity(1 + 10 * members.len());
        args.push(members.len().to_string());
        for &i in members {
            match &items[i] {
                SettleItem::Rate {
                    key,
                    window_us,
                    limit,
                    delta,
                    once,
                    ..
                } => {
                    let k = key_index(key, &mut keys);
                    let o = once.as_deref().map_or(0, |o| key_index(o, &mut keys));
                    args.push("r".into());
                    args.push(k.to_string());
                    args.push(window_us.to_string());
                    args.push(limit.to_string());
                    args.push(delta.to_string());
                    args.push(o.to_string());
                }
                SettleItem::Budget {
                    key,
                    holds_key,
                    rid,
                    held,
                    actual,
                    limit,
                    thresholds,
                    expire_at_ms,
                    once,
                    ..
                } => {
                    let k = key_index(key, &mut keys);
                    let z = key_index(holds_key, &mut keys);
                    let o = once.as_deref().map_or(0, |o| key_index(o, &mut keys));
                    args.push("b".into());
                    args.push(k.to_string());
                    args.push(z.to_string());
                    args.push(rid.clone());
                    args.push(held.to_string());
                    args.push(actual.to_string());
                    args.push(limit.to_string());
                    args.push(expire_at_ms.to_string());
                    args.push(o.to_string());
                    args.push(thresholds.len().to_string());
                    args.extend(thresholds.iter().map(u8::to_string));
                }
            }
        }
        let reply = self.fcall(SETTLE, &keys, &args).await?;
        let Value::Array(rows) = reply else {
            return Err(StoreError::Reply(format!("{reply:?}")));
        };
        for (&i, row) in members.iter().zip(rows) {
            if let SettleItem::Budget { .. } = items[i] {
                let nums = ints(&row);
                out[i] = Some(BudgetSettled {
                    spent: nums.first().copied().unwrap_or(0),
                    reserved: nums.get(1).copied().unwrap_or(0),
                    fired: nums.iter().skip(2).map(|t| *t as u8).collect(),
                });
            }
        }
        Ok(())
    }
}

/// 1-based position of `k` in `keys` (Lua's KEYS), adding it if new.
fn key_index<'a>(k: &'a str, keys: &mut Vec<&'a str>) -> usize {
    match keys.iter().position(|x| *x == k) {
        Some(i) => i + 1,
        None => {
            keys.push(k);
            keys.len()
        }
    }
}

/// Integers of a reply array; the functions return numbers formatted as strings (Lua would
/// truncate large ones) and Redis integers.
fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(items) => items.iter().map(int).collect(),
        other => vec![int(other)],
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as i64)
            .unwrap_or(0),
        Value::SimpleString(s) => s.parse::<f64>().map(|f| f as i64).unwrap_or(0),
        _ => 0,
    }
}

fn parse_verdict(reply: &Value, plan: &Plan) -> Result<Verdict, StoreError> {
    let n = ints(reply);
    let bad = || StoreError::Reply(format!("{reply:?}"));
    let idx = |i: usize| -> Result<usize, StoreError> {
        n.get(i)
            .and_then(|v| usize::try_from(*v - 1).ok())
            .ok_or_else(bad)
    };
    match n.first() {
        Some(1) => {
            let candidate = idx(1)?;
            let checks = plan.candidates.get(candidate).ok_or_else(bad)?;
            let states = checks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let second = n.get(3 + 2 * i).copied().unwrap_or(0).max(0) as u64;
                    let budget = matches!(c.kind, CheckKind::Budget { .. });
                    CheckState {
                        remaining: n.get(2 + 2 * i).copied().unwrap_or(0),
                        reset_us: if budget { 0 } else { second },
                        clamped: (budget && second > 0).then_some(second),
                    }
                })
                .collect();
            Ok(Verdict::Admitted { candidate, states })
        }
        Some(0) => Ok(Verdict::RateLimited {
            candidate: idx(1)?,
            check: idx(2)?,
            retry_after_us: n.get(3).copied().unwrap_or(0).max(0) as u64,
            state: CheckState {
                remaining: n.get(4).copied().unwrap_or(0),
                reset_us: n.get(5).copied().unwrap_or(0).max(0) as u64,
                clamped: None,
            },
        }),
        Some(2) => Ok(Verdict::BudgetExhausted {
            candidate: idx(1)?,
            check: idx(2)?,
            left: n.get(3).copied().unwrap_or(0),
        }),
        _ => Err(bad()),
    }
}
