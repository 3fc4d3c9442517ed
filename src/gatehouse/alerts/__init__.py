"""Budget alerts: a budget crossing a threshold of its limit raises a live-feed event, a metric and a signed
webhook, once per budget, measure, threshold and period, whatever the number of replicas."""
