package bluegreen_test

import (
	"context"
	"database/sql"
	"log"
	"time"

	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/consumer/bluegreen"
)

func Example() {
	ctx := context.Background()
	var (
		m            *credential.Manager // from credential.Open
		oldDB, newDB *sql.DB             // logged in with the previous and the current version
	)
	sw, err := bluegreen.New(bluegreen.Config{Blue: oldDB, Green: newDB, Window: 30 * time.Second,
		OnRollback: bluegreen.RollbackManager(m, "prod/db/orders")})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := sw.Run(ctx); err != nil {
			log.Printf("blue-green: %v (%s)", err, sw.Report().Reason)
		}
	}()
	err = sw.Do(ctx, func(db *sql.DB) error {
		_, err := db.ExecContext(ctx, "UPDATE orders SET seen = true")
		return err
	})
	log.Println(err, sw.Stats().Percent)
}
