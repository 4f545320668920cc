//! The evaluation queue of workers on a [`PostgresStore`] ([`Queue`]; the `mpsearch_tasks` and
//! `mpsearch_workers` tables of version 3, see the parent module): claims with `FOR UPDATE SKIP
//! LOCKED`, each lapsing by the lease it was taken with, and the finished trials handed back for the
//! controller to journal.

use std::time::Duration;

use super::super::codec::{decode, trial_what};
use super::super::{Finished, Queue, Task, TrialRecord, WorkerId, WorkerSeen};
use super::PostgresStore;
use crate::error::Result;

impl PostgresStore {
    /// A trial number as the tables hold it.
    fn number(&self, run: &str, number: u64) -> Result<i64> {
        i64::try_from(number).map_err(|_| {
            self.error(format!(
                "{}: the trial number is too large",
                trial_what(run, number)
            ))
        })
    }

    /// A trial record of run `run` read from the queue.
    fn queued_trial(&self, run: &str, number: i64, text: &str) -> Result<TrialRecord> {
        let what = format!("queued {}", trial_what(run, number as u64));
        let trial: TrialRecord = decode(&self.location, &what, text.as_bytes())?;
        if trial.number != number as u64 {
            return Err(self.error(format!("{what} holds trial {}", trial.number)));
        }
        Ok(trial)
    }
}

impl Queue for PostgresStore {
    fn enqueue(&self, run: &str, trials: &[TrialRecord]) -> Result<()> {
        let rows = self.encode_trials(run, trials)?;
        let mut c = self.conn()?;
        let mut tx = c.client.transaction().map_err(self.sql("cannot begin"))?;
        for (number, _, text) in &rows {
            tx.execute(
                "INSERT INTO mpsearch_tasks (run, number, state, record) \
                 VALUES ($1, $2, 'pending', $3::text::json) ON CONFLICT (run, number) DO NOTHING",
                &[&run, number, text],
            )
            .map_err(self.write_error(run, &format!("the queue of run `{run}`")))?;
        }
        tx.commit()
            .map_err(self.write_error(run, &format!("the queue of run `{run}`")))
    }

    fn claim(&self, worker: &WorkerId, skip: &[String], lease: Duration) -> Result<Option<Task>> {
        let mut c = self.conn()?;
        let row = c
            .client
            .query_opt(
                "UPDATE mpsearch_tasks t SET state = 'claimed', worker = $1, heartbeat = now(), \
                 lease = $2 \
                 FROM (SELECT run, number FROM mpsearch_tasks \
                       WHERE (state = 'pending' OR (state = 'claimed' \
                              AND heartbeat < now() - make_interval(secs => lease))) \
                         AND NOT (run = ANY($3)) \
                       ORDER BY enqueued, run, number LIMIT 1 FOR UPDATE SKIP LOCKED) open \
                 WHERE t.run = open.run AND t.number = open.number \
                 RETURNING t.run, t.number, t.record::text",
                &[&worker.id, &lease.as_secs_f64(), &skip],
            )
            .map_err(self.sql("cannot claim an evaluation"))?;
        let Some(row) = row else { return Ok(None) };
        let run: String = row.try_get(0).map_err(self.sql("a claimed task's run"))?;
        let number: i64 = row
            .try_get(1)
            .map_err(self.sql("a claimed task's number"))?;
        let text: Option<String> = row.try_get(2).map_err(self.sql("a claimed task"))?;
        let text =
            text.ok_or_else(|| self.error(format!("queued trial {number} has no record")))?;
        let trial = self.queued_trial(&run, number, &text)?;
        Ok(Some(Task { run, trial }))
    }

    fn heartbeat(&self, worker: &WorkerId) -> Result<()> {
        let mut c = self.conn()?;
        let mut tx = c.client.transaction().map_err(self.sql("cannot begin"))?;
        tx.execute(
            "INSERT INTO mpsearch_workers (id, host, pid, heartbeat) VALUES ($1, $2, $3, now()) \
             ON CONFLICT (id) DO UPDATE SET heartbeat = now()",
            &[&worker.id, &worker.host, &i64::from(worker.pid)],
        )
        .map_err(self.sql("cannot write a worker's heartbeat"))?;
        tx.execute(
            "UPDATE mpsearch_tasks SET heartbeat = now() WHERE worker = $1 AND state = 'claimed'",
            &[&worker.id],
        )
        .map_err(self.sql("cannot write a worker's heartbeat"))?;
        tx.commit()
            .map_err(self.sql("cannot write a worker's heartbeat"))
    }

    fn release(&self, worker: &WorkerId, run: &str, number: u64) -> Result<()> {
        let number = self.number(run, number)?;
        self.conn()?
            .client
            .execute(
                "UPDATE mpsearch_tasks SET state = 'pending', worker = NULL, heartbeat = NULL, \
                 lease = NULL \
                 WHERE run = $1 AND number = $2 AND state = 'claimed' AND worker = $3",
                &[&run, &number, &worker.id],
            )
            .map_err(self.sql(&format!(
                "cannot release {}",
                trial_what(run, number as u64)
            )))?;
        Ok(())
    }

    fn withdraw(&self, run: &str) -> Result<()> {
        self.conn()?
            .client
            .execute(
                "DELETE FROM mpsearch_tasks WHERE run = $1 AND state IN ('pending', 'claimed')",
                &[&run],
            )
            .map_err(self.sql(&format!("cannot update the queue of run `{run}`")))?;
        Ok(())
    }

    fn finish(&self, worker: &WorkerId, run: &str, trial: &TrialRecord) -> Result<bool> {
        let rows = self.encode_trials(run, std::slice::from_ref(trial))?;
        let (number, _, text) = &rows[0];
        let n = self
            .conn()?
            .client
            .execute(
                "UPDATE mpsearch_tasks SET state = 'finished', record = $3::text::json, \
                 worker = $4, heartbeat = now() \
                 WHERE run = $1 AND number = $2 AND state IN ('pending', 'claimed')",
                &[&run, number, text, &worker.id],
            )
            .map_err(self.sql(&format!(
                "cannot hand back {}",
                trial_what(run, trial.number)
            )))?;
        Ok(n == 1)
    }

    fn finished(&self, run: &str, numbers: &[u64]) -> Result<Vec<Finished>> {
        let numbers = numbers
            .iter()
            .map(|&n| self.number(run, n))
            .collect::<Result<Vec<i64>>>()?;
        let rows = self
            .conn()?
            .client
            .query(
                "SELECT number, record::text, worker FROM mpsearch_tasks \
                 WHERE run = $1 AND number = ANY($2) AND state = 'finished' ORDER BY number",
                &[&run, &numbers],
            )
            .map_err(self.sql(&format!("cannot read the queue of run `{run}`")))?;
        rows.iter()
            .map(|r| {
                let what = format!("the queue of run `{run}`");
                let number: i64 = r.try_get(0).map_err(self.sql(&what))?;
                let text: Option<String> = r.try_get(1).map_err(self.sql(&what))?;
                let worker: Option<String> = r.try_get(2).map_err(self.sql(&what))?;
                let text = text.ok_or_else(|| {
                    self.error(format!(
                        "finished trial {number} of run `{run}` has no record"
                    ))
                })?;
                Ok(Finished {
                    trial: self.queued_trial(run, number, &text)?,
                    worker: worker.unwrap_or_default(),
                })
            })
            .collect()
    }

    fn taken(&self, run: &str, numbers: &[u64]) -> Result<()> {
        let numbers = numbers
            .iter()
            .map(|&n| self.number(run, n))
            .collect::<Result<Vec<i64>>>()?;
        self.conn()?
            .client
            .execute(
                "UPDATE mpsearch_tasks SET state = 'taken', record = NULL \
                 WHERE run = $1 AND number = ANY($2) AND state = 'finished'",
                &[&run, &numbers],
            )
            .map_err(self.sql(&format!("cannot update the queue of run `{run}`")))?;
        Ok(())
    }

    fn workers(&self, run: Option<&str>) -> Result<Vec<WorkerSeen>> {
        let rows = self
            .conn()?
            .client
            .query(
                "SELECT w.id, w.host, w.pid, extract(epoch FROM w.heartbeat)::float8, \
                        count(t.number) FILTER (WHERE t.state = 'claimed'), \
                        count(t.number) FILTER (WHERE t.state IN ('finished', 'taken')) \
                 FROM mpsearch_workers w \
                 LEFT JOIN mpsearch_tasks t ON t.worker = w.id AND ($1::text IS NULL OR t.run = $1) \
                 GROUP BY w.id, w.host, w.pid, w.heartbeat \
                 HAVING $1::text IS NULL OR count(t.number) > 0 \
                 ORDER BY w.heartbeat DESC, w.id",
                &[&run],
            )
            .map_err(self.sql("cannot read the workers"))?;
        rows.iter()
            .map(|r| {
                let what = "the workers";
                let pid: i64 = r.try_get(2).map_err(self.sql(what))?;
                let heartbeat: f64 = r.try_get(3).map_err(self.sql(what))?;
                let claims: i64 = r.try_get(4).map_err(self.sql(what))?;
                let finished: i64 = r.try_get(5).map_err(self.sql(what))?;
                Ok(WorkerSeen {
                    id: r.try_get(0).map_err(self.sql(what))?,
                    host: r.try_get(1).map_err(self.sql(what))?,
                    pid: u32::try_from(pid).unwrap_or(0),
                    claims: claims.max(0) as u64,
                    finished: finished.max(0) as u64,
                    heartbeat_unix: heartbeat.max(0.0) as u64,
                })
            })
            .collect()
    }
}
