package authz

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// Config names the policy and token files. The zero value is
// authorization off: every caller may call every method.
type Config struct {
	PolicyFile string
	TokensFile string
}

// RegisterFlags registers -auth.policy-file and -auth.tokens-file.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.PolicyFile, "auth.policy-file", "", "file of lines \"cert:<name> <permissions>\" or \"token:<name> <permissions>\" (docs/security.md); reloaded when it changes; empty: authorization off")
	fs.StringVar(&c.TokensFile, "auth.tokens-file", "", "file of lines \"<name> sha256:<hex>\", the SHA-256 of each bearer token a client may send; reloaded when it changes; needs -auth.policy-file")
}

// Enabled reports whether calls are authorized.
func (c *Config) Enabled() bool { return c.PolicyFile != "" }

// Validate checks the flags and that the files parse; errors name the
// flag and the line.
func (c *Config) Validate() error {
	if c.TokensFile != "" && c.PolicyFile == "" {
		return errors.New("-auth.tokens-file: set without -auth.policy-file, which says what the tokens may do")
	}
	if !c.Enabled() {
		return nil
	}
	if _, err := readPolicy(c.PolicyFile); err != nil {
		return err
	}
	if c.TokensFile != "" {
		if _, err := readTokens(c.TokensFile); err != nil {
			return err
		}
	}
	return nil
}

func readPolicy(name string) (policy, error) {
	return readParsed("-auth.policy-file", name, parsePolicy)
}

func readTokens(name string) (tokens, error) {
	return readParsed("-auth.tokens-file", name, parseTokens)
}

// readParsed reads the file name that flag gave and parses it; errors
// name the flag, and the file when it does not parse.
func readParsed[T any](flag, name string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(name)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", flag, err)
	}
	v, err := parse(data)
	if err != nil {
		return zero, fmt.Errorf("%s %s: %w", flag, name, err)
	}
	return v, nil
}
