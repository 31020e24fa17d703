package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/notify"
	"github.com/nebula-credential/nebula-credential/secret"
	"github.com/nebula-credential/nebula-credential/store"
)

func init() {
	extraCommands = append(extraCommands, cmdNotify)
}

// notifier is what the notify commands need, on a local store or a server.
type notifier interface {
	list(ctx context.Context) ([]notify.Subscription, error)
	add(ctx context.Context, r notify.AddRequest) (*notify.Subscription, string, error)
	remove(ctx context.Context, id string) error
	test(ctx context.Context, id string) (*notify.Delivery, error)
	delivery(ctx context.Context, id int64) (*notify.Delivery, error)
	deliveries(ctx context.Context, state, sub string) ([]notify.Delivery, error)
	replay(ctx context.Context, sub string, ids []int64) ([]notify.Delivery, error)
}

type localNotifier struct{ s *notify.Service }

func (l localNotifier) list(ctx context.Context) ([]notify.Subscription, error) { return l.s.List(ctx) }
func (l localNotifier) add(ctx context.Context, r notify.AddRequest) (*notify.Subscription, string, error) {
	sub, key, err := l.s.Add(ctx, r)
	return sub, key.Reveal(), err
}
func (l localNotifier) remove(ctx context.Context, id string) error { return l.s.Remove(ctx, id) }
func (l localNotifier) test(ctx context.Context, id string) (*notify.Delivery, error) {
	return l.s.Test(ctx, id)
}
func (l localNotifier) delivery(ctx context.Context, id int64) (*notify.Delivery, error) {
	return l.s.GetDelivery(ctx, id)
}
func (l localNotifier) deliveries(ctx context.Context, state, sub string) ([]notify.Delivery, error) {
	return l.s.Deliveries(ctx, store.DeliveryFilter{State: state, SubscriptionID: sub})
}
func (l localNotifier) replay(ctx context.Context, sub string, ids []int64) ([]notify.Delivery, error) {
	return l.s.Replay(ctx, sub, ids)
}

type remoteNotifier struct{ c *client.Client }

func (r remoteNotifier) list(ctx context.Context) ([]notify.Subscription, error) {
	return r.c.NotifySubscriptions(ctx)
}
func (r remoteNotifier) add(ctx context.Context, a notify.AddRequest) (*notify.Subscription, string, error) {
	req := client.SubscriptionRequest{Name: a.Name, URL: a.URL.Reveal(), Prefix: a.Prefix, Events: a.Events, Format: a.Format, ExpiryDays: a.ExpiryDays}
	if a.GraceWarn > 0 {
		req.GraceWarn = a.GraceWarn.String()
	}
	if a.OverdueFor > 0 {
		req.OverdueFor = a.OverdueFor.String()
	}
	return r.c.NotifyAdd(ctx, req)
}
func (r remoteNotifier) remove(ctx context.Context, id string) error {
	return r.c.NotifyRemove(ctx, id)
}
func (r remoteNotifier) test(ctx context.Context, id string) (*notify.Delivery, error) {
	return r.c.NotifyTest(ctx, id)
}
func (r remoteNotifier) delivery(ctx context.Context, id int64) (*notify.Delivery, error) {
	return r.c.NotifyDelivery(ctx, id)
}
func (r remoteNotifier) deliveries(ctx context.Context, state, sub string) ([]notify.Delivery, error) {
	return r.c.NotifyDeliveries(ctx, state, sub)
}
func (r remoteNotifier) replay(ctx context.Context, sub string, ids []int64) ([]notify.Delivery, error) {
	return r.c.NotifyReplay(ctx, sub, ids)
}

func notifierOf(m backend) (notifier, error) {
	switch b := m.(type) {
	case local:
		return localNotifier{&notify.Service{Store: b.m.Store(), Keys: b.m.SubscriptionKeys()}}, nil
	case remote:
		return remoteNotifier{b.c}, nil
	}
	return nil, fmt.Errorf("notify: unsupported backend %T", m)
}

// withNotifier runs fn with the notifier of the backend; package notify's
// validation errors are usage errors.
func (g *globals) withNotifier(fn func(cmd *cobra.Command, args []string, n notifier) error) func(*cobra.Command, []string) error {
	return g.withBackend(openOpts{noRecover: true}, func(cmd *cobra.Command, args []string, m backend) error {
		n, err := notifierOf(m)
		if err != nil {
			return err
		}
		err = fn(cmd, args, n)
		if errors.Is(err, notify.ErrInvalid) {
			return usageError{err}
		}
		return err
	})
}

func cmdNotify(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "notify",
		Short: "Webhook notifications: subscriptions, tests, dead letters",
		Long: `Manage webhook subscriptions. 'serve' delivers a notification, at least once and
signed, for every rotation committed, failed, rolled back, needing attention or
re-authorisation, for grace periods about to end, certificates about to expire,
credentials overdue for their policy and consumers left on an old version.
Failed deliveries are retried with backoff; after the last attempt they wait in
the dead-letter queue for 'notify replay'.

The payload schema, headers and signature check are in docs/notifications.md.
Through a server (--addr), a token needs the notify permission on the
subscription's prefix (notify:* for one without prefix).`,
		Example: `  echo https://hooks.example.com/nebula | nebula-credential notify add --url - --prefix prod/
  nebula-credential notify add --url-file slack-url.txt --format slack --events rotation_failed,needs_attention
  nebula-credential notify list
  nebula-credential notify test sub_0123456789abcdef
  nebula-credential notify dead-letters
  nebula-credential notify replay --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(cmdNotifyAdd(g), cmdNotifyList(g), cmdNotifyRemove(g), cmdNotifyTest(g), cmdNotifyDeadLetters(g), cmdNotifyReplay(g))
	return c
}

// readURL reads the receiver URL from --url, stdin (--url -) or --url-file.
// A URL with a credential in it is refused on the command line, where other
// users of the machine can read it.
func (g *globals) readURL(flag, file string) (secret.Value, error) {
	var raw string
	switch {
	case flag != "" && file != "":
		return secret.Value{}, usagef("give --url or --url-file, not both")
	case flag == "-":
		b, err := io.ReadAll(io.LimitReader(bufio.NewReader(g.stdin), 8<<10))
		if err != nil {
			return secret.Value{}, fmt.Errorf("reading the URL from stdin: %w", err)
		}
		raw = strings.TrimSpace(string(b))
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return secret.Value{}, usagef("reading --url-file: %v", err)
		}
		raw = strings.TrimSpace(string(b))
	case flag != "":
		if notify.RedactURL(flag) != flag {
			return secret.Value{}, usagef("the URL holds what looks like a credential (user info, a query value or a long path segment): pass it on stdin with --url - or in a file with --url-file, not on the command line")
		}
		raw = flag
	default:
		return secret.Value{}, usagef("give the receiver with --url URL, --url - (stdin) or --url-file FILE")
	}
	if err := notify.ValidateURL(raw); err != nil {
		return secret.Value{}, usageError{err}
	}
	return secret.New(raw), nil
}

func cmdNotifyAdd(g *globals) *cobra.Command {
	var (
		urlFlag, urlFile, events string
		req                      notify.AddRequest
	)
	c := &cobra.Command{
		Use:   "add --url URL|- [--url-file FILE] [--prefix P] [--events K,K] [--format json|slack]",
		Short: "Subscribe a webhook receiver to events",
		Long: `Create a subscription and print its ID and signing secret. The secret is shown
this once: the receiver needs it to verify the X-Nebula-Signature header.

Events (--events, comma-separated; default all): ` + strings.Join(notify.Kinds(), ", ") + `.
--prefix limits them to credentials under a path (segment-aware: prod/db covers
prod/db/x, not prod/dbx). --format slack sends Slack incoming-webhook messages.
--expiry-days, --grace-warn and --overdue-for set when certificate_expiring,
grace_ending and policy_overdue fire.

A URL with a credential in it (user:password@, a token in the query or a long
secret path segment, as in Slack webhook URLs) is refused with --url URL: pass
it on stdin (--url -) or with --url-file.`,
		Example: `  nebula-credential notify add --url https://hooks.example.com/nebula --prefix prod/
  echo "$SLACK_WEBHOOK_URL" | nebula-credential notify add --url - --format slack --name oncall --events rotation_failed,needs_attention,reauth_required
  nebula-credential notify add --url-file hook.txt --events certificate_expiring --expiry-days 30 --json`,
		Args: cobra.NoArgs,
		RunE: g.withNotifier(func(cmd *cobra.Command, _ []string, n notifier) error {
			u, err := g.readURL(urlFlag, urlFile)
			if err != nil {
				return err
			}
			req.URL = u
			if events != "" {
				for _, e := range strings.Split(events, ",") {
					if e = strings.TrimSpace(e); e != "" {
						req.Events = append(req.Events, e)
					}
				}
			}
			sub, key, err := n.add(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(struct {
					*notify.Subscription
					SigningSecret string `json:"signing_secret"`
				}{sub, key})
			}
			g.printf("subscription %s: %s (%s, events %s)\n", sub.ID, sub.URL, sub.Format, strings.Join(sub.Events, ","))
			g.printf("signing secret (shown once; the receiver verifies X-Nebula-Signature with it): %s\n", key)
			g.printf("send a test with: nebula-credential notify test %s\n", sub.ID)
			return nil
		}),
	}
	f := c.Flags()
	f.StringVar(&urlFlag, "url", "", "receiver URL (http or https); - reads it from stdin")
	f.StringVar(&urlFile, "url-file", "", "read the receiver URL from this file")
	f.StringVar(&req.Name, "name", "", "a name to recognise the subscription by")
	f.StringVar(&req.Prefix, "prefix", "", "only credentials under this path")
	f.StringVar(&events, "events", "", "comma-separated event kinds (default all)")
	f.StringVar(&req.Format, "format", notify.FormatJSON, "json (the documented schema) or slack")
	f.IntVar(&req.ExpiryDays, "expiry-days", notify.DefaultExpiryDays, "certificate_expiring: days before expiry")
	f.DurationVar(&req.GraceWarn, "grace-warn", notify.DefaultGraceWarn, "grace_ending: how long before the end of grace")
	f.DurationVar(&req.OverdueFor, "overdue-for", notify.DefaultOverdueFor, "policy_overdue: how long after the due time")
	return c
}

func cmdNotifyList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List webhook subscriptions (URLs redacted)",
		Long: `List the subscriptions with their redacted URL, prefix, format and events.
Through a server, only those the token may manage are listed.`,
		Example: `  nebula-credential notify list
  nebula-credential notify list --json`,
		Args: cobra.NoArgs,
		RunE: g.withNotifier(func(cmd *cobra.Command, _ []string, n notifier) error {
			subs, err := n.list(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(nonNil(subs))
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tURL\tPREFIX\tFORMAT\tEVENTS")
			for _, s := range subs {
				prefix := s.Prefix
				if prefix == "" {
					prefix = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Name, s.URL, prefix, s.Format, strings.Join(s.Events, ","))
			}
			return tw.Flush()
		}),
	}
}

func cmdNotifyRemove(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Delete a webhook subscription with its deliveries and dead letters",
		Long: `Delete a subscription. Its pending deliveries and its dead letters go with it.
Exits 3 if there is no such subscription.`,
		Example: `  nebula-credential notify remove sub_0123456789abcdef`,
		Args:    cobra.ExactArgs(1),
		RunE: g.withNotifier(func(cmd *cobra.Command, args []string, n notifier) error {
			if err := n.remove(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]string{"removed": args[0]})
			}
			g.printf("removed %s\n", args[0])
			return nil
		}),
	}
}

func cmdNotifyTest(g *globals) *cobra.Command {
	var wait time.Duration
	c := &cobra.Command{
		Use:   "test ID [--wait 30s]",
		Short: "Send a test notification and wait for its outcome",
		Long: `Queue a test notification (kind "test") to a subscription and wait up to --wait
for the running server to deliver it. Exits 0 once delivered, 1 if it failed or
is still pending (its last error is shown). --wait 0 only queues it.`,
		Example: `  nebula-credential notify test sub_0123456789abcdef
  nebula-credential notify test sub_0123456789abcdef --wait 0 --json`,
		Args: cobra.ExactArgs(1),
		RunE: g.withNotifier(func(cmd *cobra.Command, args []string, n notifier) error {
			ctx := cmd.Context()
			d, err := n.test(ctx, args[0])
			if err != nil {
				return err
			}
			deadline := time.Now().Add(wait)
			for wait > 0 && d.State == store.DeliveryPending && time.Now().Before(deadline) {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(200 * time.Millisecond):
				}
				if d, err = n.delivery(ctx, d.ID); err != nil {
					return err
				}
			}
			var failed error
			switch {
			case wait == 0 || d.State == store.DeliveryDelivered:
			case d.State == store.DeliveryDead:
				failed = fmt.Errorf("the test notification failed every attempt: check the receiver, then `nebula-credential notify replay %d`", d.ID)
			default:
				failed = fmt.Errorf("the test notification is still pending after %s: is `nebula-credential serve` running on this store? Check `nebula-credential notify dead-letters` later", wait)
			}
			if g.json {
				return g.printJSONResult(d, failed)
			}
			g.printf("delivery %d: %s after %d attempt(s)", d.ID, d.State, d.Attempts)
			if d.LastError != "" {
				g.printf(" (last error: %s)", d.LastError)
			}
			g.printf("\n")
			return failed
		}),
	}
	c.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the delivery (0: do not wait)")
	return c
}

func printDeliveries(g *globals, ds []notify.Delivery) error {
	if g.json {
		return g.printJSON(nonNil(ds))
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSUBSCRIPTION\tEVENT\tKIND\tCREDENTIAL\tSTATE\tATTEMPTS\tLAST ERROR")
	for _, d := range ds {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", d.ID, d.SubscriptionID, d.EventID, d.Kind, d.CredentialID, d.State, d.Attempts, d.LastError)
	}
	return tw.Flush()
}

func cmdNotifyDeadLetters(g *globals) *cobra.Command {
	var sub string
	return withSub(&cobra.Command{
		Use:   "dead-letters [--subscription ID]",
		Short: "List notifications that failed every attempt",
		Long: `List the dead-letter queue: deliveries that failed every attempt, with their last
HTTP status and error. Replay them with 'notify replay' once the receiver works.
Exits 0 whether or not the queue is empty.`,
		Example: `  nebula-credential notify dead-letters
  nebula-credential notify dead-letters --subscription sub_0123456789abcdef --json`,
		Args: cobra.NoArgs,
		RunE: g.withNotifier(func(cmd *cobra.Command, _ []string, n notifier) error {
			ds, err := n.deliveries(cmd.Context(), store.DeliveryDead, sub)
			if err != nil {
				return err
			}
			return printDeliveries(g, ds)
		}),
	}, &sub)
}

func withSub(c *cobra.Command, sub *string) *cobra.Command {
	c.Flags().StringVar(sub, "subscription", "", "only this subscription")
	return c
}

func cmdNotifyReplay(g *globals) *cobra.Command {
	var (
		sub string
		all bool
	)
	return withSub(func() *cobra.Command {
		c := &cobra.Command{
			Use:   "replay (ID... | --all | --subscription ID)",
			Short: "Send dead letters again",
			Long: `Put dead letters back in the queue with a fresh attempt count; the running server
delivers them with the same event ID (Idempotency-Key) as before. Give delivery
IDs (from 'notify dead-letters'), --subscription ID for all of one
subscription's, or --all.`,
			Example: `  nebula-credential notify replay 42 43
  nebula-credential notify replay --subscription sub_0123456789abcdef
  nebula-credential notify replay --all --json`,
			RunE: g.withNotifier(func(cmd *cobra.Command, args []string, n notifier) error {
				var ids []int64
				for _, a := range args {
					id, err := strconv.ParseInt(a, 10, 64)
					if err != nil || id <= 0 {
						return usagef("delivery IDs are numbers (see `nebula-credential notify dead-letters`); got %q", a)
					}
					ids = append(ids, id)
				}
				switch {
				case len(ids) > 0 && (all || sub != ""):
					return usagef("give delivery IDs, or --all, or --subscription, not several")
				case len(ids) == 0 && !all && sub == "":
					return usagef("say what to replay: delivery IDs, --subscription ID or --all")
				}
				ds, err := n.replay(cmd.Context(), sub, ids)
				if err != nil {
					return err
				}
				if g.json {
					return printDeliveries(g, ds)
				}
				g.printf("replaying %d notification(s)\n", len(ds))
				return nil
			}),
		}
		c.Flags().BoolVar(&all, "all", false, "every dead letter")
		return c
	}(), &sub)
}
