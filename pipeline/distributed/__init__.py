"""Distribution of the particle ensemble over ranks: communicators, shards, migration."""
