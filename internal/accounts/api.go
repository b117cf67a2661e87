package accounts

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
)

// Paths of the accounts API, Kiln's own (Lambda has none): `kiln accounts`
// calls it, signed with the admin account's key like any Lambda call.
const (
	PathAccounts = "/kiln/accounts"
)

// Register adds the accounts API to mux, which must sit behind
// auth.Middleware. Only the admin account may call it.
//
//	POST   /kiln/accounts                     {"name": ...}  → {"account":..., "key":{... secret}}
//	GET    /kiln/accounts                     → {"accounts": [...]}
//	POST   /kiln/accounts/{id}/keys           → {"key":{... secret}}
//	DELETE /kiln/accounts/{id}/keys/{keyid}   → 204
func (s *Store) Register(mux *http.ServeMux) {
	mux.Handle("POST "+PathAccounts, s.admin(func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Name string `json:"name"`
		}
		if b := auth.Body(r); len(b) > 0 {
			if err := json.Unmarshal(b, &in); err != nil {
				return api.Errorf(api.InvalidRequestContent, "Could not parse request body into json: %v", err)
			}
		}
		if len(in.Name) > 64 || strings.ContainsAny(in.Name, "\x00\n\r") {
			return api.Errorf(api.InvalidParameterValue, "An account name is at most 64 characters on one line.")
		}
		a, k, err := s.Create(r.Context(), in.Name)
		if err != nil {
			return err
		}
		api.WriteJSON(w, http.StatusCreated, map[string]any{"account": a, "key": k})
		return nil
	}))
	mux.Handle("GET "+PathAccounts, s.admin(func(w http.ResponseWriter, r *http.Request) error {
		list, err := s.List(r.Context())
		if err != nil {
			return err
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"accounts": list})
		return nil
	}))
	mux.Handle("POST "+PathAccounts+"/{id}/keys", s.admin(func(w http.ResponseWriter, r *http.Request) error {
		k, err := s.AddKey(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		api.WriteJSON(w, http.StatusCreated, map[string]any{"key": k})
		return nil
	}))
	mux.Handle("DELETE "+PathAccounts+"/{id}/keys/{key}", s.admin(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.RemoveKey(r.Context(), r.PathValue("id"), r.PathValue("key")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
}

// admin serves h to the admin account only, mapping the store's errors to
// Lambda's shapes.
func (s *Store) admin(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, _ := auth.FromContext(r.Context())
		a, err := s.Account(r.Context(), caller.Account)
		if err == nil && (!a.Admin || caller.Session != "") || errors.Is(err, ErrNotFound) { // never a function's credentials
			err = api.Errorf(api.AccessDenied, "User: arn:aws:iam::%s:root is not authorized to manage Kiln's accounts: only the admin account is", caller.Account)
		}
		if err == nil {
			err = h(w, r)
		}
		var e *api.Error
		switch {
		case err == nil:
		case errors.As(err, &e):
			api.WriteError(w, e)
		case errors.Is(err, ErrNotFound):
			api.WriteError(w, api.Errorf(api.ResourceNotFound, "%v", err))
		case errors.Is(err, ErrTooMany):
			api.WriteError(w, api.Errorf(api.InvalidParameterValue, "%v", err))
		default:
			slog.Error("accounts API", "path", r.URL.Path, "err", err)
			api.WriteError(w, err)
		}
	})
}
