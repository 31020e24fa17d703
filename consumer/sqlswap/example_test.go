package sqlswap_test

import (
	"context"
	"database/sql"
	"log"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer"
	"github.com/nebula-credential/nebula-credential/consumer/sqlswap"
)

func Example() {
	ctx := context.Background()
	var m *credential.Manager // from credential.Open
	src := consumer.FromManager(m)
	defer src.Close()

	// sqlswap.MySQL(nil) for MySQL/MariaDB; any driver through a sqlswap.Driver.
	c, err := sqlswap.New(ctx, sqlswap.Config{Source: src, ID: "prod/db/orders", Driver: sqlswap.Postgres("")})
	if err != nil {
		log.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close() // also stops c
	if _, err := db.ExecContext(ctx, "UPDATE orders SET seen = true"); err != nil {
		log.Fatal(err)
	}
	log.Println(c.Stats())
}
