use aragora_core::time::now_ms;
use aragora_queue::{
    ClaimedJob, JobError, JobHandler, NewJob, Queue, WorkerConfig, list_workers, spawn_worker,
};
use aragora_store::{Db, DbOptions, Row, migrate, sqlx};
use aragora_testkit::{Backend, TestDb, both_backends, eventually, fresh_database};
use async_trait::async_trait;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn setup(backend: Backend) -> (TestDb, Queue) {
    let t = fresh_database(backend).await;
    let db = Db::connect(&t.url, &DbOptions::default()).await.unwrap();
    migrate::run(&db).await.unwrap();
    (t, Queue::new(db))
}

fn config(queue: &str, max: usize) -> WorkerConfig {
    let mut c = WorkerConfig::new("test", queue, max);
    c.lease = Duration::from_millis(600);
    c.poll_interval = Duration::from_millis(50);
    c.shutdown_deadline = Duration::from_millis(300);
    c
}

/// Records which worker ran which job, and how many runs of a job overlapped.
#[derive(Default)]
struct Recorder {
    runs: Mutex<HashMap<String, Vec<String>>>,
    running: Mutex<HashMap<String, u32>>,
    max_overlap: Mutex<u32>,
}

struct Recording {
    name: String,
    rec: Arc<Recorder>,
}

#[async_trait]
impl JobHandler for Recording {
    async fn handle(&self, job: ClaimedJob) -> Result<(), JobError> {
        {
            let mut running = self.rec.running.lock().unwrap();
            let n = running.entry(job.id.clone()).or_default();
            *n += 1;
            let mut max = self.rec.max_overlap.lock().unwrap();
            *max = (*max).max(*n);
        }
        tokio::task::yield_now().await;
        self.rec
            .runs
            .lock()
            .unwrap()
            .entry(job.id.clone())
            .or_default()
            .push(self.name.clone());
        *self.rec.running.lock().unwrap().get_mut(&job.id).unwrap() -= 1;
        Ok(())
    }
}

async fn job_count(q: &Queue) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM jobs")
        .fetch_one(q.db().reader())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

both_backends!(two_workers_never_run_the_same_job, |backend| async move {
    let (_t, q) = setup(backend).await;
    // A second Queue on the same database stands for a second process.
    let q2 = Queue::new(q.db().clone());
    let jobs: Vec<NewJob> = (0..400)
        .map(|i| NewJob::new("work", json!({ "i": i })))
        .collect();
    q.enqueue_many(&jobs).await.unwrap();
    let rec = Arc::new(Recorder::default());
    let stop = CancellationToken::new();
    let w1 = spawn_worker(
        q.clone(),
        config("work", 8),
        Arc::new(Recording {
            name: "w1".into(),
            rec: rec.clone(),
        }),
        stop.clone(),
    );
    let w2 = spawn_worker(
        q2.clone(),
        config("work", 8),
        Arc::new(Recording {
            name: "w2".into(),
            rec: rec.clone(),
        }),
        stop.clone(),
    );
    let done = eventually(Duration::from_secs(30), || async {
        (job_count(&q).await == 0).then_some(())
    })
    .await;
    stop.cancel();
    w1.join().await;
    w2.join().await;
    assert!(done.is_some(), "all jobs completed");
    let runs = rec.runs.lock().unwrap();
    assert_eq!(runs.len(), 400, "every job ran");
    assert!(runs.values().all(|r| r.len() == 1), "no job ran twice");
    assert_eq!(*rec.max_overlap.lock().unwrap(), 1);
    let by_w1 = runs.values().filter(|r| r[0] == "w1").count();
    assert!(
        by_w1 > 0 && by_w1 < 400,
        "both workers took part ({by_w1} by w1)"
    );
});

both_backends!(
    job_of_a_dead_worker_runs_again_after_its_lease_expires,
    |backend| async move {
        let (_t, q) = setup(backend).await;
        let id = q.enqueue(&NewJob::new("work", json!({}))).await.unwrap();
        // A worker claims the job and then "dies": it never heartbeats, completes or releases.
        let claimed = q
            .claim("work", "wrk-dead", 1, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(
            q.claim("work", "wrk-other", 1, Duration::from_secs(5))
                .await
                .unwrap()
                .is_empty(),
            "leased job is not claimable"
        );
        let rec = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let w = spawn_worker(
            q.clone(),
            config("work", 2),
            Arc::new(Recording {
                name: "live".into(),
                rec: rec.clone(),
            }),
            stop.clone(),
        );
        let ran = eventually(Duration::from_secs(20), || async {
            rec.runs.lock().unwrap().get(&id).cloned()
        })
        .await;
        stop.cancel();
        w.join().await;
        assert_eq!(ran, Some(vec!["live".to_string()]));
        // The dead worker cannot complete a job it no longer holds.
        assert_eq!(q.complete("wrk-dead", &[id]).await.unwrap(), 0);
    }
);

both_backends!(delayed_jobs_wait_until_due, |backend| async move {
    let (_t, q) = setup(backend).await;
    let due = now_ms() + 1500;
    q.enqueue(&NewJob::new("later", json!({})).run_at(due))
        .await
        .unwrap();
    assert!(
        q.claim("later", "w", 10, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    let depth = q.depths().await.unwrap();
    assert_eq!((depth[0].ready, depth[0].delayed), (0, 1));
    let claimed = eventually(Duration::from_secs(10), || async {
        let c = q
            .claim("later", "w", 10, Duration::from_secs(5))
            .await
            .unwrap();
        (!c.is_empty()).then_some(c)
    })
    .await
    .expect("claimed once due");
    assert!(
        claimed[0].claimed_at >= due,
        "claimed at {} before due {due}",
        claimed[0].claimed_at
    );
});

struct Failing {
    permanent: bool,
}

#[async_trait]
impl JobHandler for Failing {
    async fn handle(&self, _job: ClaimedJob) -> Result<(), JobError> {
        if self.permanent {
            Err(JobError::Permanent("payload is unusable".into()))
        } else {
            Err(JobError::Retry("endpoint down".into()))
        }
    }
}

both_backends!(
    failing_jobs_retry_then_stay_visible_as_dead,
    |backend| async move {
        let (_t, q) = setup(backend).await;
        let retried = q
            .enqueue(&NewJob::new("flaky", json!({})).max_attempts(2))
            .await
            .unwrap();
        let permanent = q.enqueue(&NewJob::new("broken", json!({}))).await.unwrap();
        let stop = CancellationToken::new();
        let w1 = spawn_worker(
            q.clone(),
            config("flaky", 1),
            Arc::new(Failing { permanent: false }),
            stop.clone(),
        );
        let w2 = spawn_worker(
            q.clone(),
            config("broken", 1),
            Arc::new(Failing { permanent: true }),
            stop.clone(),
        );
        let dead = eventually(Duration::from_secs(20), || async {
            let a = q.dead_jobs("flaky", 10).await.unwrap();
            let b = q.dead_jobs("broken", 10).await.unwrap();
            (a.len() == 1 && b.len() == 1).then_some((a, b))
        })
        .await;
        stop.cancel();
        w1.join().await;
        w2.join().await;
        let (a, b) = dead.expect("both jobs end dead");
        assert_eq!(a[0].0, retried);
        assert_eq!(a[0].1, 2, "two attempts before dead");
        assert_eq!(a[0].2.as_deref(), Some("endpoint down"));
        assert_eq!(b[0].0, permanent);
        assert_eq!(b[0].1, 1, "permanent failure is dead at once");
        let depths = q.depths().await.unwrap();
        assert!(
            depths
                .iter()
                .all(|d| d.dead == 1 && d.ready == 0 && d.running == 0)
        );
    }
);

struct Hanging;

#[async_trait]
impl JobHandler for Hanging {
    async fn handle(&self, _job: ClaimedJob) -> Result<(), JobError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

both_backends!(shutdown_releases_unfinished_jobs, |backend| async move {
    let (_t, q) = setup(backend).await;
    let id = q.enqueue(&NewJob::new("slow", json!({}))).await.unwrap();
    let stop = CancellationToken::new();
    let w = spawn_worker(
        q.clone(),
        config("slow", 1),
        Arc::new(Hanging),
        stop.clone(),
    );
    let running = eventually(Duration::from_secs(10), || async {
        let d = q.depths().await.unwrap();
        (d.first().map(|d| d.running) == Some(1)).then_some(())
    })
    .await;
    assert!(running.is_some(), "job was claimed");
    stop.cancel();
    w.join().await;
    let row = sqlx::query("SELECT status, attempts, worker_id FROM jobs WHERE id = $1")
        .bind(&id)
        .fetch_one(q.db().reader())
        .await
        .unwrap();
    assert_eq!(row.try_get::<String, _>(0).unwrap(), "ready");
    assert_eq!(
        row.try_get::<i64, _>(1).unwrap(),
        0,
        "the interrupted attempt is not counted"
    );
    assert_eq!(row.try_get::<Option<String>, _>(2).unwrap(), None);
    let workers = list_workers(q.db()).await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].state, "stopped");
});

both_backends!(
    a_chosen_worker_id_is_refused_while_live_and_frees_a_dead_holders_jobs,
    |backend| async move {
        let (_t, q) = setup(backend).await;
        let db = q.db().clone();
        let mut cfg = config("chosen", 1);
        cfg.lease = Duration::from_millis(300);
        aragora_queue::reserve_worker_id(&db, "batch-1", &cfg)
            .await
            .expect("a new id is free");
        // Held by a live worker (fresh heartbeat): refused, naming the holder.
        let err = aragora_queue::reserve_worker_id(&db, "batch-1", &cfg)
            .await
            .expect_err("in use");
        assert!(
            err.to_string().contains("batch-1") && err.to_string().contains(&cfg.node),
            "{err}"
        );

        // The holder dies holding a job; once its heartbeat is 3 leases old the id is free again
        // and the job is released at once (not renewed by the new holder's heartbeats).
        let job = q.enqueue(&NewJob::new("chosen", json!({}))).await.unwrap();
        let claimed = q
            .claim("chosen", "batch-1", 1, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        aragora_queue::reserve_worker_id(&db, "batch-1", &cfg)
            .await
            .expect("a dead holder's id is free");
        let row = sqlx::query("SELECT status, worker_id FROM jobs WHERE id = $1")
            .bind(&job)
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!(row.try_get::<String, _>(0).unwrap(), "ready");
        assert_eq!(row.try_get::<Option<String>, _>(1).unwrap(), None);

        // A worker with that id runs under it, and after a clean stop the id is free at once.
        let stop = CancellationToken::new();
        let rec = Arc::new(Recorder::default());
        cfg.id = Some("batch-1".into());
        let w = spawn_worker(
            q.clone(),
            cfg.clone(),
            Arc::new(Recording {
                name: "chosen".into(),
                rec: rec.clone(),
            }),
            stop.clone(),
        );
        assert_eq!(w.id, "batch-1");
        let ran = eventually(Duration::from_secs(10), || async {
            rec.runs.lock().unwrap().contains_key(&job).then_some(())
        })
        .await;
        assert!(ran.is_some(), "the released job ran");
        assert!(
            aragora_queue::reserve_worker_id(&db, "batch-1", &cfg)
                .await
                .is_err(),
            "refused while the worker runs"
        );
        stop.cancel();
        w.join().await;
        aragora_queue::reserve_worker_id(&db, "batch-1", &cfg)
            .await
            .expect("free after a clean stop");
    }
);
