package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// child is the supervised exec process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

type childExit struct {
	c    *child
	code int
}

func (a *Agent) startChild() error {
	e := a.cfg.Exec
	cmd := exec.Command(e.Command[0], e.Command[1:]...)
	cmd.Env = append(os.Environ(), a.env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.opts.Stdin, a.opts.Stdout, a.opts.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", e.Command[0], cause(err))
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	a.child = c
	a.log.Info("started the child", "pid", cmd.Process.Pid, "program", e.Command[0])
	go func() {
		err := cmd.Wait()
		c.code = exitCode(err)
		close(c.done)
		a.children <- childExit{c: c, code: c.code}
	}()
	return nil
}

// exitCode is the shell's view of how a process ended: its status, or 128+signal.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

func (c *child) signal(sig syscall.Signal) error {
	select {
	case <-c.done:
		return errors.New("the child has exited")
	default:
	}
	if err := c.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal the child: %w", err)
	}
	return nil
}

// stop signals the child and kills it after the kill timeout.
func (a *Agent) stopChild() {
	c := a.child
	if c == nil {
		return
	}
	a.child = nil
	sig := syscall.SIGTERM
	if a.cfg.Exec.OnChange != "signal" {
		sig = a.cfg.Exec.sig
	}
	c.signal(sig)
	kill := time.After(time.Duration(a.cfg.Exec.KillTimeout))
	for done := false; !done; {
		select {
		case <-c.done:
			done = true
		case s := <-a.sigs:
			// the agent's own signals still reach the child while it stops;
			// INT or TERM also cancel a restart
			sig := s.(syscall.Signal)
			a.log.Info("forwarding a signal to the stopping child", "signal", sig.String())
			c.signal(sig)
			if sig == syscall.SIGINT || sig == syscall.SIGTERM {
				a.stopped = &ExitError{}
			}
		case <-kill:
			a.log.Warn("the child did not stop in time; killing it", "pid", c.cmd.Process.Pid, "after", time.Duration(a.cfg.Exec.KillTimeout))
			c.cmd.Process.Kill()
			<-c.done
			done = true
		}
	}
	if a.stopped != nil {
		a.stopped.Code = c.code // the child's own status is run's
	}
}

func (a *Agent) restartChild() error {
	a.stopChild()
	if a.stopped != nil {
		a.log.Info("told to stop during the restart; not starting the child again", "status", a.stopped.Code)
		return nil
	}
	return a.startChild()
}
