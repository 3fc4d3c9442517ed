"""Front-ends that act for their users: a key marked acts_for_users names the person each request is for."""
