//! The store every replica shares: Redis; in unit tests, an in-process fake of it that can be
//! made unreachable or slow, so degraded mode and the replay run without a server.

use super::{BudgetSettled, Plan, SettleItem, StoreError, Verdict, redis};

pub(super) enum Shared {
    Redis(redis::RedisStore),
    #[cfg(test)]
    Fake(super::tests::FakeShared),
}

impl Shared {
    pub fn describe(&self) -> &'static str {
        match self {
            Shared::Redis(r) => r.describe(),
            #[cfg(test)]
            Shared::Fake(_) => "fake",
        }
    }

    pub async fn admit(&self, plan: &Plan) -> Result<Verdict, StoreError> {
        match self {
            Shared::Redis(r) => r.admit(plan).await,
            #[cfg(test)]
            Shared::Fake(f) => f.call(|m| m.admit(plan)).await,
        }
    }

    pub async fn settle(
        &self,
        items: &[SettleItem],
    ) -> Result<Vec<Option<BudgetSettled>>, StoreError> {
        match self {
            Shared::Redis(r) => r.settle(items).await,
            #[cfg(test)]
            Shared::Fake(f) => f.call(|m| m.settle(items)).await,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Shared::Redis(r) => r.ping().await,
            #[cfg(test)]
            Shared::Fake(f) => f.call(|_| ()).await,
        }
    }

    pub async fn mark_alert(&self, key: &str, threshold: u8) -> Result<Option<i64>, StoreError> {
        match self {
            Shared::Redis(r) => r.mark_alert(key, threshold).await,
            #[cfg(test)]
            Shared::Fake(f) => f.call(|m| m.mark_alert(key, threshold)).await,
        }
    }

    pub async fn set_nx(&self, key: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        match self {
            Shared::Redis(r) => r.set_nx(key, ttl_secs).await,
            #[cfg(test)]
            Shared::Fake(f) => f.call(|m| m.set_nx(key, ttl_secs)).await,
        }
    }
}
