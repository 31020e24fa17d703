package pgxswap_test

import (
	"context"
	"fmt"
	"log"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/pgxswap"
)

func Example() {
	ctx := context.Background()
	var m *credential.Manager // from credential.Open
	src := consumer.FromManager(m)
	defer src.Close()

	p, err := pgxswap.New(ctx, pgxswap.Config{Source: src, ID: "prod/db/orders",
		OnDrained: func(d consumer.Drain) { log.Printf("version %d drained in %v", d.Version, d.Took) }})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	var n int
	if err := p.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Version(), p.Stats()) // e.g. 7 map[6:1 7:4] while version 6 drains
}
