"""Background jobs on one replica at a time: the lease, the schedules, the runner and its recorded runs, the
replica heartbeats. The runner never imports a domain: each domain defines its jobs (its scheduled.py), and the
composition root hands them to the runner."""
