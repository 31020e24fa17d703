package postgres

// PoolStats reports the admin pool's hits, misses and idle connections.
func PoolStats(r *Rotator) (hits, misses int64, idle int) { return r.pool.Stats() }
