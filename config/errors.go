package config

import "errors"

var (
	// ErrUnknownKey is returned when a config file names a key Parley does not know.
	ErrUnknownKey = errors.New("config: unknown key")
	// ErrInvalid wraps every validation failure; the message names the field.
	ErrInvalid = errors.New("config: invalid value")
)
