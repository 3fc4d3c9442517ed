"""Groups: teams, projects and cohorts of users, with project keys bound to them."""
