-- Mail was once a queue job of its own ('renewal-worker.send'); the outbox is its queue now.
-- Jobs of that kind left by an older release have no worker: they go, once.
DELETE FROM apalis.jobs WHERE job_type = 'renewal-worker.send';
