use std::sync::atomic::AtomicU64;

use super::*;
use crate::identity::{FiscalCode, Level, Method};

struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl TestClock {
    fn set(&self, t: u64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

fn store() -> (MemoryStore, Arc<TestClock>) {
    let clock = Arc::new(TestClock(AtomicU64::new(1_000)));
    let s = MemoryStore::new(
        Limits {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(8 * 3600),
            capacity: 1000,
        },
        clock.clone(),
    );
    (s, clock)
}

fn session(now: u64) -> Session {
    Session {
        identity: Identity {
            subject: FiscalCode::parse("RSSMRA80A01H501U").unwrap(),
            given_name: "Mario".into(),
            family_name: "Rossi".into(),
            level: Level::SpidL2,
            method: Method::Spid,
            idp: "https://idp.example/".into(),
            roles: vec![],
            patronato: None,
            auth_time: now,
            extra: Default::default(),
        },
        created: now,
        sid: "h".into(),
        claims: None,
        saml: None,
        pin: None,
    }
}

#[tokio::test]
async fn idle_timeout_ends_a_quiet_session_and_activity_extends_it() {
    let (s, clock) = store();
    let id = SessionId::random();
    s.put(&id, session(1_000)).await.unwrap();
    // Active every 20 minutes for 2 hours: still alive.
    for step in 1..=6 {
        clock.set(1_000 + step * 20 * 60);
        assert!(s.get(&id).await.unwrap().is_some(), "step {step}");
    }
    // 30 minutes of silence: gone, and stays gone.
    clock.set(1_000 + 6 * 20 * 60 + 30 * 60);
    assert!(s.get(&id).await.unwrap().is_none());
    clock.set(1_000 + 6 * 20 * 60 + 60);
    assert!(s.get(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn absolute_timeout_ends_even_an_active_session() {
    let (s, clock) = store();
    let id = SessionId::random();
    s.put(&id, session(1_000)).await.unwrap();
    let mut t = 1_000;
    while t < 1_000 + 8 * 3600 - 600 {
        t += 600;
        clock.set(t);
        assert!(s.get(&id).await.unwrap().is_some(), "at {t}");
    }
    clock.set(1_000 + 8 * 3600);
    assert!(s.get(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn delete_ends_a_session() {
    let (s, _) = store();
    let id = SessionId::random();
    s.put(&id, session(1_000)).await.unwrap();
    s.delete(&id).await.unwrap();
    assert!(s.get(&id).await.unwrap().is_none());
    assert!(s.get(&SessionId::random()).await.unwrap().is_none());
}

#[tokio::test]
async fn pending_logins_are_consumed_once_and_expire() {
    let (s, clock) = store();
    let p = PendingLogin {
        return_to: "/fascicolo".into(),
        data: [("request_id".to_string(), "_abc".to_string())].into(),
    };
    s.put_pending("_abc", p.clone(), Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(s.take_pending("_abc").await.unwrap(), Some(p.clone()));
    assert_eq!(s.take_pending("_abc").await.unwrap(), None);

    s.put_pending("_late", p, Duration::from_secs(300))
        .await
        .unwrap();
    clock.set(1_000 + 301);
    assert_eq!(s.take_pending("_late").await.unwrap(), None);
}

#[tokio::test]
async fn replay_cache_admits_a_key_once_until_it_expires() {
    let (s, clock) = store();
    assert!(
        s.insert_if_absent("id-1", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        !s.insert_if_absent("id-1", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        s.insert_if_absent("id-2", Duration::from_secs(60))
            .await
            .unwrap()
    );
    clock.set(1_000 + 61);
    assert!(
        s.insert_if_absent("id-1", Duration::from_secs(60))
            .await
            .unwrap()
    );
}

#[test]
fn session_ids_are_random_and_their_hash_reveals_nothing_usable() {
    let a = SessionId::random();
    let b = SessionId::random();
    assert_ne!(a, b);
    assert_eq!(a.to_cookie_value().len(), 43);
    assert_eq!(SessionId::parse(&a.to_cookie_value()), Some(a.clone()));
    assert_ne!(a.hash(), a.to_cookie_value());
    assert!(!format!("{a:?}").contains(&a.to_cookie_value()));
    assert_eq!(SessionId::parse("short"), None);
}
