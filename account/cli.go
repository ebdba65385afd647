package account

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parleyhq/parley/store"
)

// UserUsage explains `parley user`.
const UserUsage = `Usage: parley user add <email>       add a host (asks for the password)
       parley user list              list hosts: email, state, created, last sign-in
       parley user disable <email>   stop a host signing in, and sign them out everywhere
       parley user enable <email>    let a disabled host sign in again
       parley user passwd <email>    set a host's password, and sign them out everywhere

add and passwd read the password from standard input when it is not a
terminal (one line; the line break is dropped), and otherwise ask twice
without echo. Passwords need at least 10 characters.
The commands use the data directory of -data-dir or PARLEY_DATA_DIR
(default ./parley-data) and may run while the server does.
Exit status: 0 done, 1 failed, 2 usage error.`

// Exit statuses of CLI.Run.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// CLI runs `parley user ...` against a store. main fills it in.
type CLI struct {
	// Store is the store to use; when nil, Run calls OpenStore once the
	// command line is checked (create is true only for add, so the other
	// commands do not make an empty data directory) and closes it after.
	Store     *store.Store
	OpenStore func(create bool) (*store.Store, error)
	Stdin     io.Reader // the password, when ReadPassword is nil
	Stdout    io.Writer
	Stderr    io.Writer
	// ReadPassword prompts on the terminal and reads a line without echo.
	// Nil when standard input is not a terminal: the password is then the
	// first line of Stdin.
	ReadPassword func(prompt string) (string, error)
	// Password is the argon2id cost of new hashes (default DefaultParams).
	Password Params
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// usageError is a command line that cannot be run as written.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Run runs one user command (args without the leading "user") and returns
// the exit status: ExitOK, ExitFailure, or ExitUsage (usage printed).
func (c *CLI) Run(ctx context.Context, args []string) int {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Password == (Params{}) {
		c.Password = DefaultParams
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(c.Stderr, UserUsage)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	err := c.run(ctx, args[0], args[1:])
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.Stderr, "parley user: %s\n\n%s\n", ue.msg, UserUsage)
		return ExitUsage
	default:
		fmt.Fprintf(c.Stderr, "parley user %s: %s\n", args[0], plainError(err))
		return ExitFailure
	}
}

// plainError drops the package prefixes from an error for the terminal.
func plainError(err error) string {
	msg := err.Error()
	for _, p := range []string{"account: ", "store: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}

func (c *CLI) run(ctx context.Context, cmd string, args []string) error {
	want := 1
	if cmd == "list" {
		want = 0
	}
	switch cmd {
	case "add", "list", "disable", "enable", "passwd":
	default:
		return usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
	if len(args) != want {
		if want == 0 {
			return usageError{fmt.Sprintf("%s takes no arguments", cmd)}
		}
		return usageError{fmt.Sprintf("%s takes one email address", cmd)}
	}
	var email string
	if cmd != "list" {
		e, err := store.NormalizeEmail(args[0])
		if err != nil {
			return usageError{fmt.Sprintf("%q is not an email address like name@example.com", args[0])}
		}
		email = e
	}
	if c.Store == nil {
		if c.OpenStore == nil {
			return errors.New("no store")
		}
		st, err := c.OpenStore(cmd == "add")
		if err != nil {
			return err
		}
		defer st.Close()
		c.Store = st
		defer func() { c.Store = nil }()
	}
	if cmd == "list" {
		return c.list(ctx)
	}
	switch cmd {
	case "add":
		return c.add(ctx, email)
	case "passwd":
		return c.passwd(ctx, email)
	}
	return c.setDisabled(ctx, email, cmd == "disable")
}

func (c *CLI) add(ctx context.Context, email string) error {
	if _, err := c.Store.UserByEmail(ctx, email); err == nil {
		return fmt.Errorf("%s already has an account", email)
	}
	pw, err := c.password()
	if err != nil {
		return err
	}
	_, err = c.Store.AddUser(ctx, email, HashPassword(pw, c.Password), c.Now())
	if errors.Is(err, store.ErrExists) {
		return fmt.Errorf("%s already has an account", email)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "Added host %s.\n", email)
	return nil
}

func (c *CLI) user(ctx context.Context, email string) (store.User, error) {
	u, err := c.Store.UserByEmail(ctx, email)
	if errors.Is(err, store.ErrNotFound) {
		return u, fmt.Errorf("no account for %s", email)
	}
	return u, err
}

func (c *CLI) passwd(ctx context.Context, email string) error {
	u, err := c.user(ctx, email)
	if err != nil {
		return err
	}
	pw, err := c.password()
	if err != nil {
		return err
	}
	if err := c.Store.SetPassword(ctx, u.ID, HashPassword(pw, c.Password)); err != nil {
		return err
	}
	n, err := c.Store.DeleteUserSessions(ctx, u.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "Changed the password of %s%s.\n", email, signedOut(n))
	return nil
}

func (c *CLI) setDisabled(ctx context.Context, email string, disable bool) error {
	u, err := c.user(ctx, email)
	if err != nil {
		return err
	}
	if u.Disabled == disable {
		fmt.Fprintf(c.Stdout, "%s is already %s.\n", email, stateWord(disable))
		return nil
	}
	var n int64
	if disable {
		// SetDisabled deletes the sessions too; count them first for the message.
		n, _ = c.Store.DeleteUserSessions(ctx, u.ID)
	}
	if err := c.Store.SetDisabled(ctx, u.ID, disable); err != nil {
		return err
	}
	if disable {
		fmt.Fprintf(c.Stdout, "Disabled %s%s.\n", email, signedOut(n))
	} else {
		fmt.Fprintf(c.Stdout, "Enabled %s.\n", email)
	}
	return nil
}

func signedOut(n int64) string {
	switch n {
	case 0:
		return ""
	case 1:
		return " and signed out its 1 session"
	}
	return fmt.Sprintf(" and signed out its %d sessions", n)
}

func stateWord(disabled bool) string {
	if disabled {
		return "disabled"
	}
	return "enabled"
}

func (c *CLI) list(ctx context.Context) error {
	users, err := c.Store.ListUsers(ctx)
	if err != nil {
		return err
	}
	if len(users) == 0 {
		fmt.Fprintln(c.Stdout, "No hosts yet. Add one with: parley user add <email>")
		return nil
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tSTATE\tCREATED\tLAST SIGN-IN")
	const layout = "2006-01-02 15:04 UTC"
	for _, u := range users {
		last := "never"
		if !u.LastLoginAt.IsZero() {
			last = u.LastLoginAt.UTC().Format(layout)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Email, stateWord(u.Disabled), u.CreatedAt.UTC().Format(layout), last)
	}
	return tw.Flush()
}

// password reads a new password: twice on a terminal, else one line of
// Stdin; then applies CheckPassword.
func (c *CLI) password() (string, error) {
	var pw string
	if c.ReadPassword != nil {
		p1, err := c.ReadPassword("New password: ")
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		if err := CheckPassword(p1); err != nil {
			return "", err
		}
		p2, err := c.ReadPassword("Repeat it: ")
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		if p1 != p2 {
			return "", errors.New("the two passwords differ; nothing was changed")
		}
		pw = p1
	} else {
		line, err := readLine(c.Stdin)
		if err != nil {
			return "", err
		}
		pw = line
	}
	if err := CheckPassword(pw); err != nil {
		return "", err
	}
	return pw, nil
}

// readLine reads the first line of r (at most MaxPasswordLen bytes before
// the line break) and drops the "\n" or "\r\n" that ends it.
func readLine(r io.Reader) (string, error) {
	if r == nil {
		return "", errors.New("no password on standard input")
	}
	br := bufio.NewReaderSize(io.LimitReader(r, MaxPasswordLen+3), MaxPasswordLen+3)
	line, err := br.ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	if err == io.EOF && len(line) > MaxPasswordLen {
		return "", ErrPasswordTooLong
	}
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", errors.New("no password on standard input (pipe one line, or run this on a terminal)")
	}
	return line, nil
}
