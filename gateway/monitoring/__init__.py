"""Failures that throw no exception: reconciliation, volume anomalies, SLO burn rates, synthetic golden paths,
alerts and the exception queue for people (docs/monitoring.md).

    models.py        what is declared (x-gateway.slo / volume / calendar(s), reconcile/*.yaml, synthetic/*.yaml)
    declarations.py  loading the rule files and checking everything at start-up, with located errors
    calendar.py      business calendars: the next instant held work may run
    store.py         the shared state, in the job store's database (SQLite or PostgreSQL)
    sampler.py       the gateway's own Prometheus counters, per process, turned into shared per-minute counts
    slo.py           error budgets and multi-window burn rates
    anomalies.py     hourly volume, error ratio and latency trend against an EWMA baseline per hour of the week
    reconcile.py     two systems compared through their adapters, paused (not wrong) when a vendor is down
    sources.py       the records each side of a rule lists or looks up
    synthetic.py     golden paths run through the gateway's own pipeline
    alerts.py        alerts: deduplicated, silenced, delivered (operator page, Alertmanager, signed webhooks)
    exceptions.py    the queue for people: dead letters, mismatches and failed synthetic runs
    promrules.py     `gateway slo rules` (Prometheus rules) and `gateway slo dashboard` (Grafana)
    service.py       the per-process loop tying these together
"""
