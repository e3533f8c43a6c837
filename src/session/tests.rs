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
        None,
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
        link: Default::default(),
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
    // 43 characters that are not the unpadded URL-safe form of 32 bytes.
    let v = a.to_cookie_value();
    assert_eq!(SessionId::parse(&format!("{}+", &v[..42])), None);
    assert_eq!(SessionId::parse(&format!("{}=", &v[..42])), None);
    assert_eq!(SessionId::parse(&"_".repeat(43)), None, "trailing bits set");
    let all_ones = format!("{}8", "_".repeat(42));
    assert_eq!(SessionId::parse(&all_ones).map(|s| s.0), Some([0xff; 32]));
    let last_bits = format!("{}B", &v[..42]); // non-zero trailing bits
    assert_eq!(SessionId::parse(&last_bits), None);
}

/// At capacity a new session is always kept and the least recently used one makes room
/// (issue 11, item 10): a fresh login never vanishes, and evictions are counted. The same
/// holds for pending logins and the replay cache.
#[tokio::test]
async fn at_capacity_the_newest_entry_is_kept_and_the_oldest_evicted() {
    let clock = Arc::new(TestClock(AtomicU64::new(1_000)));
    let evicted = Arc::new(std::sync::Mutex::new(Vec::<&'static str>::new()));
    let log = evicted.clone();
    let s = MemoryStore::new(
        Limits {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(8 * 3600),
            capacity: 50,
        },
        clock.clone(),
        Some(Arc::new(move |cache| log.lock().unwrap().push(cache))),
    );
    let ids: Vec<SessionId> = (0..50).map(|_| SessionId::random()).collect();
    for id in &ids {
        s.put(id, session(1_000)).await.unwrap();
        s.run_pending_tasks();
    }
    // Used often: moka's default admission would favour these over any newcomer.
    for _ in 0..5 {
        for id in &ids[1..] {
            assert!(s.get(id).await.unwrap().is_some());
        }
    }
    s.run_pending_tasks();
    for round in 0..20 {
        let fresh = SessionId::random();
        s.put(&fresh, session(1_000)).await.unwrap();
        s.run_pending_tasks();
        assert!(
            s.get(&fresh).await.unwrap().is_some(),
            "round {round}: a new login is kept at capacity"
        );
    }
    assert!(
        s.get(&ids[0]).await.unwrap().is_none(),
        "the least recently used went"
    );
    let count = evicted
        .lock()
        .unwrap()
        .iter()
        .filter(|c| **c == "sessions")
        .count();
    assert_eq!(count, 20, "{:?}", evicted.lock().unwrap());

    // Pending logins and replay keys: a new one is kept at capacity too.
    for i in 0..60 {
        s.put_pending(
            &format!("p{i}"),
            PendingLogin {
                return_to: "/".into(),
                data: Default::default(),
            },
            Duration::from_secs(600),
        )
        .await
        .unwrap();
        s.run_pending_tasks();
    }
    assert!(s.take_pending("p59").await.unwrap().is_some());
    for i in 0..250 {
        assert!(
            s.insert_if_absent(&format!("r{i}"), Duration::from_secs(600))
                .await
                .unwrap()
        );
        s.run_pending_tasks();
    }
    assert!(
        !s.insert_if_absent("r249", Duration::from_secs(600))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn alive_does_not_count_as_activity() {
    let (s, clock) = store();
    let id = SessionId::random();
    s.put(&id, session(1_000)).await.unwrap();
    assert!(s.alive(&id).await.unwrap());
    // Checked by `alive` every minute, never used: it still idles out.
    for minute in 1..=29 {
        clock.set(1_000 + minute * 60);
        assert!(s.alive(&id).await.unwrap(), "minute {minute}");
    }
    clock.set(1_000 + 30 * 60);
    assert!(!s.alive(&id).await.unwrap());
    assert!(!s.alive(&SessionId::random()).await.unwrap());
}

/// What a method keeps on the session survives serialization (a shared store keeps
/// sessions serialized), and a session written without it reads as `SessionLink::None`.
#[test]
fn the_session_link_survives_serialization() {
    use crate::session::{SamlLink, SessionLink};
    let mut s = session(1_000);
    s.link = SessionLink::Saml(SamlLink {
        federation: "spid".into(),
        idp: "https://idp.example/".into(),
        name_id: "abc".into(),
        name_qualifier: "https://idp.example/".into(),
        session_index: Some("_s1".into()),
    });
    let json = serde_json::to_string(&s).unwrap();
    let back: Session = serde_json::from_str(&json).unwrap();
    assert_eq!(back.link, s.link);
    assert_eq!(back.link.saml().map(|l| l.name_id.as_str()), Some("abc"));
    assert!(back.link.pin().is_none());
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value.as_object_mut().unwrap().remove("link");
    let old: Session = serde_json::from_value(value).unwrap();
    assert_eq!(old.link, SessionLink::None);
}

/// The back-channel logout index: the sessions filed under a key end together, once,
/// a session filed twice is ended once, one already gone is not reported, and an expired
/// filing is forgotten.
#[tokio::test]
async fn indexed_sessions_end_together_once() {
    let (s, clock) = store();
    let (a, b, gone) = (
        SessionId::random(),
        SessionId::random(),
        SessionId::random(),
    );
    for id in [&a, &b] {
        s.put(id, session(1_000)).await.unwrap();
    }
    let ttl = Duration::from_secs(600);
    s.index("oidc-sid:kc\nS1", &a, ttl).await.unwrap();
    s.index("oidc-sid:kc\nS1", &b, ttl).await.unwrap();
    s.index("oidc-sid:kc\nS1", &a, ttl).await.unwrap();
    s.index("oidc-sid:kc\nS1", &gone, ttl).await.unwrap();
    s.index("oidc-sid:kc\nS2", &b, ttl).await.unwrap();
    let mut ended = s.end_indexed("oidc-sid:kc\nS1").await.unwrap();
    ended.sort();
    let mut want = vec![a.hash(), b.hash()];
    want.sort();
    assert_eq!(ended, want);
    assert!(s.get(&a).await.unwrap().is_none() && s.get(&b).await.unwrap().is_none());
    assert!(s.end_indexed("oidc-sid:kc\nS1").await.unwrap().is_empty());
    let c = SessionId::random();
    s.put(&c, session(1_000)).await.unwrap();
    s.index("oidc-sid:kc\nS3", &c, ttl).await.unwrap();
    clock.set(1_000 + 601);
    assert!(s.end_indexed("oidc-sid:kc\nS3").await.unwrap().is_empty());
}

/// An OIDC session's ID token never shows in its debug form.
#[test]
fn the_oidc_link_hides_its_token() {
    let link = OidcLink {
        provider: "kc".into(),
        sub: "u1".into(),
        sid: Some("s".into()),
        id_token: "eyJhbGciOi.secret.sig".into(),
    };
    let text = format!("{:?}", SessionLink::Oidc(link));
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("redacted"));
}

/// No session outlives its filings: one whose filing is evicted for room ends with it, and
/// the oldest of a subject's many sessions ends when the per-key list is full. So after
/// logout tokens for every key, no session is left.
#[tokio::test]
async fn no_session_outlives_its_filings() {
    let clock = Arc::new(TestClock(AtomicU64::new(1_000)));
    let s = MemoryStore::new(
        Limits {
            idle: Duration::from_secs(1800),
            absolute: Duration::from_secs(8 * 3600),
            capacity: 4,
        },
        clock,
        None,
    );
    let ttl = Duration::from_secs(600);
    let ids: Vec<SessionId> = (0..4).map(|_| SessionId::random()).collect();
    let mut keys = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        s.put(id, session(1_000)).await.unwrap();
        for k in 0..3 {
            let key = format!("k{i}-{k}");
            s.index(&key, id, ttl).await.unwrap();
            keys.push(key);
        }
    }
    s.run_pending_tasks();
    for key in &keys {
        s.end_indexed(key).await.unwrap();
    }
    for id in &ids {
        assert!(
            s.get(id).await.unwrap().is_none(),
            "a session outlived its filings"
        );
    }
    // 65 sessions of one subject: the first one ends when the 65th is filed.
    let (s, _) = store();
    let many: Vec<SessionId> = (0..65).map(|_| SessionId::random()).collect();
    for id in &many {
        s.put(id, session(1_000)).await.unwrap();
        s.index("oidc-sub:kc\nu", id, ttl).await.unwrap();
    }
    assert!(s.get(&many[0]).await.unwrap().is_none());
    assert!(s.get(&many[64]).await.unwrap().is_some());
    assert_eq!(s.end_indexed("oidc-sub:kc\nu").await.unwrap().len(), 64);
}
