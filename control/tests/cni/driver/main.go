// Command cni-driver runs a CNI network configuration list the way a container
// runtime does, through libcni (github.com/containernetworking/cni/libcni).
// It exists so that weir's tests exercise weir-cni (and any plugins chained
// after it) through the same code path as containerd and CRI-O, instead of
// hand-rolling CNI_* environment variables and stdin.
//
// Usage:
//
//	cni-driver <add|check|del|gc|status|validate|version> --conflist FILE [flags]
//
// Flags:
//
//	--conflist FILE       network configuration list (.conflist JSON); required
//	                      except for `version`
//	--container-id ID     CNI_CONTAINERID (add, check, del)
//	--netns PATH          CNI_NETNS (add, check; optional for del)
//	--ifname NAME         CNI_IFNAME (default eth0)
//	--args K=V;K=V        CNI_ARGS, e.g. K8S_POD_NAMESPACE=x;K8S_POD_NAME=y
//	--cni-path DIR:DIR    plugin search path (default $CNI_PATH, else
//	                      /opt/cni/bin:/usr/lib/cni)
//	--cache-dir DIR       libcni result cache (default /var/lib/cni)
//	--cap KEY=JSON        capability argument, repeatable, e.g.
//	                      --cap 'portMappings=[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]'
//	                      --cap 'bandwidth={"ingressRate":1000000,"ingressBurst":100000}'
//	--valid ID[/IF],...   gc only: attachments to keep (ifname defaults to --ifname)
//	--timeout DURATION    overall deadline (default 60s)
//
// Output contract:
//
//   - add prints the final result of the chain (as cached by libcni) as JSON
//     on stdout.
//   - version prints a JSON document describing libcni and, if --conflist is
//     given, the versions every plugin in the list reports.
//   - validate prints the capabilities the list advertises as JSON.
//   - On failure the exit status is 1 and the last line on stderr is a JSON
//     object {"code":N,"msg":...,"details":...,"error":...}: code/msg/details
//     are the plugin's CNI error when there is one (code is 0 when the failure
//     did not come from a plugin), and "error" is the full message including
//     libcni's context (which plugin failed, in which command). Anything a
//     plugin wrote to stderr is passed through before that line.
//   - Usage errors exit with status 2.
//
// GC and STATUS: the libcni shipped by Debian 12 (golang-github-appc-cni-dev
// 1.1.2) implements CNI spec versions 0.1.0 to 1.0.0 and has neither
// GCNetworkList nor GetStatusNetworkList (both arrived with CNI spec 1.1.0 in
// libcni 1.2). This driver therefore implements gc and status itself, with the
// semantics of libcni 1.2 and the CNI 1.1 spec, invoking each plugin binary
// directly through libcni's invoke package (CNI_COMMAND=GC / STATUS, CNI_PATH
// set, the other CNI_* variables empty, as libcni 1.2 does):
//
//   - gc: first, every attachment of this network found in the libcni cache
//     (<cache-dir>/results/<network>-<containerID>-<ifname>) that is not in
//     --valid is torn down with a normal DEL of the whole list, using the
//     netns, CNI_ARGS and capability args recorded at ADD time. Then, if the
//     list's cniVersion is >= 1.1.0, every plugin in the list is sent GC with
//     its own configuration plus "name", "cniVersion" and
//     "cni.dev/valid-attachments": [{"containerID":..,"ifname":..},...] on
//     stdin (no prevResult, no runtimeConfig). All errors are collected.
//   - status: if the list's cniVersion is >= 1.1.0, every plugin in order is
//     sent STATUS with its configuration plus "name" and "cniVersion"; the
//     first failure is returned unchanged (spec codes 50/51). For older lists
//     status succeeds without invoking anything, as libcni 1.2 does.
//
// Note that libcni 1.1.2 cannot parse results whose cniVersion is 1.1.0, so
// add/check against a list with "cniVersion": "1.1.0" fail with "unsupported
// CNI result version"; use "1.0.0" for add/check/del and a 1.1.0 copy of the
// same list (same "name") for gc/status.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// libcniVersion is set at build time (-ldflags -X main.libcniVersion=...) to
// the version of the libcni sources the driver was compiled against.
var libcniVersion = "unknown"

const defaultCNIPath = "/opt/cni/bin:/usr/lib/cni"

type capFlag map[string]interface{}

func (c capFlag) String() string { return "" }

func (c capFlag) Set(v string) error {
	k, raw, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("expected KEY=JSON, got %q", v)
	}
	var val interface{}
	if err := json.Unmarshal([]byte(raw), &val); err != nil {
		return fmt.Errorf("capability %q: invalid JSON: %w", k, err)
	}
	c[k] = val
	return nil
}

type options struct {
	conflist    string
	containerID string
	netns       string
	ifname      string
	args        string
	cniPath     string
	cacheDir    string
	caps        capFlag
	valid       string
	validSet    bool
	timeout     time.Duration
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: cni-driver <add|check|del|gc|status|validate|version> --conflist FILE "+
		"[--container-id ID] [--netns PATH] [--ifname eth0] [--args 'K=V;K=V'] "+
		"[--cni-path DIR:DIR] [--cache-dir DIR] [--cap KEY=JSON]... [--valid ID[/IF],...] [--timeout 60s]")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	cmd := os.Args[1]
	if cmd == "-h" || cmd == "--help" || cmd == "help" {
		usage(os.Stdout)
		return
	}

	o := options{caps: capFlag{}}
	fs := flag.NewFlagSet("cni-driver "+cmd, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.StringVar(&o.conflist, "conflist", "", "network configuration list file")
	fs.StringVar(&o.containerID, "container-id", "", "container ID (CNI_CONTAINERID)")
	fs.StringVar(&o.netns, "netns", "", "network namespace path (CNI_NETNS)")
	fs.StringVar(&o.ifname, "ifname", "eth0", "interface name (CNI_IFNAME)")
	fs.StringVar(&o.args, "args", "", "CNI_ARGS, K=V pairs separated by ';'")
	fs.StringVar(&o.cniPath, "cni-path", "", "plugin directories separated by ':'")
	fs.StringVar(&o.cacheDir, "cache-dir", "", "libcni cache directory (default "+libcni.CacheDir+")")
	fs.Var(o.caps, "cap", "capability argument KEY=JSON (repeatable)")
	fs.StringVar(&o.valid, "valid", "", "gc: comma-separated attachments to keep, ID or ID/IFNAME")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "overall deadline")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() != 0 {
		usageErr("unexpected arguments: %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "valid" {
			o.validSet = true
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	if err := run(ctx, cmd, &o); err != nil {
		cancel()
		fail(err)
	}
}

func usageErr(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "cni-driver: "+format+"\n", a...)
	usage(os.Stderr)
	os.Exit(2)
}

// fail prints the error as a single JSON line on stderr and exits 1.
func fail(err error) {
	out := struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details,omitempty"`
		Error   string `json:"error"`
	}{Msg: err.Error(), Error: err.Error()}
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		out.Code, out.Msg, out.Details = cniErr.Code, cniErr.Msg, cniErr.Details
	}
	b, _ := json.Marshal(out)
	fmt.Fprintln(os.Stderr, string(b))
	os.Exit(1)
}

func parseCNIArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid CNI_ARGS entry %q (want K=V)", kv)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

func pluginPath(o *options) []string {
	p := o.cniPath
	if p == "" {
		p = os.Getenv("CNI_PATH")
	}
	if p == "" {
		p = defaultCNIPath
	}
	var dirs []string
	for _, d := range filepath.SplitList(p) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func newExec() invoke.Exec {
	// Same as libcni's default exec, spelled out so gc/status (which call the
	// invoke package directly) use the identical one.
	return &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: os.Stderr},
		PluginDecoder: version.PluginDecoder{},
	}
}

func run(ctx context.Context, cmd string, o *options) error {
	switch cmd {
	case "add", "check", "del", "gc", "status", "validate", "version":
	default:
		usageErr("unknown command %q", cmd)
	}

	cniPath := pluginPath(o)
	exec := newExec()
	cni := libcni.NewCNIConfigWithCacheDir(cniPath, o.cacheDir, exec)

	var list *libcni.NetworkConfigList
	if o.conflist != "" {
		var err error
		if list, err = libcni.ConfListFromFile(o.conflist); err != nil {
			return err
		}
	} else if cmd != "version" {
		usageErr("--conflist is required for %s", cmd)
	}

	cniArgs, err := parseCNIArgs(o.args)
	if err != nil {
		usageErr("%v", err)
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    o.containerID,
		NetNS:          o.netns,
		IfName:         o.ifname,
		Args:           cniArgs,
		CapabilityArgs: map[string]interface{}(o.caps),
	}

	switch cmd {
	case "add", "check":
		if o.containerID == "" || o.netns == "" {
			usageErr("%s needs --container-id and --netns", cmd)
		}
	case "del":
		if o.containerID == "" {
			usageErr("del needs --container-id")
		}
	}

	switch cmd {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		return printJSON(res)
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	case "gc":
		if !o.validSet {
			usageErr("gc needs --valid (use --valid '' to keep nothing)")
		}
		valid, err := parseValid(o.valid, o.ifname)
		if err != nil {
			usageErr("%v", err)
		}
		return gcNetworkList(ctx, cni, exec, cniPath, cacheDirOf(o), list, valid)
	case "status":
		return statusNetworkList(ctx, exec, cniPath, list)
	case "validate":
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			return err
		}
		sort.Strings(caps)
		if caps == nil {
			caps = []string{}
		}
		return printJSON(map[string]interface{}{"capabilities": caps})
	case "version":
		return printVersion(ctx, cni, list)
	}
	return nil
}

func printJSON(v interface{}) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(os.Stdout, string(b))
	return err
}

func printVersion(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList) error {
	type pluginVersion struct {
		Type              string   `json:"type"`
		SupportedVersions []string `json:"supportedVersions,omitempty"`
		Error             string   `json:"error,omitempty"`
	}
	out := struct {
		Libcni             string          `json:"libcni"`
		SpecVersion        string          `json:"specVersion"`
		SupportedVersions  []string        `json:"supportedVersions"`
		GCAndStatus        string          `json:"gcAndStatus"`
		ConflistCNIVersion string          `json:"conflistCniVersion,omitempty"`
		Plugins            []pluginVersion `json:"plugins,omitempty"`
	}{
		Libcni:            libcniVersion,
		SpecVersion:       version.Current(),
		SupportedVersions: version.All.SupportedVersions(),
		GCAndStatus:       "implemented by cni-driver (CNI spec 1.1.0 semantics), not by libcni",
	}
	var failed bool
	if list != nil {
		out.ConflistCNIVersion = list.CNIVersion
		for _, p := range list.Plugins {
			pv := pluginVersion{Type: p.Network.Type}
			info, err := cni.GetVersionInfo(ctx, p.Network.Type)
			if err != nil {
				pv.Error = err.Error()
				failed = true
			} else {
				pv.SupportedVersions = info.SupportedVersions()
			}
			out.Plugins = append(out.Plugins, pv)
		}
	}
	if err := printJSON(out); err != nil {
		return err
	}
	if failed {
		return errors.New("VERSION failed for at least one plugin (see output)")
	}
	return nil
}

// ---- GC / STATUS (CNI spec 1.1.0), see the package comment ----

type gcAttachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

func parseValid(s, defaultIf string) ([]gcAttachment, error) {
	out := []gcAttachment{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, ifname, ok := strings.Cut(item, "/")
		if !ok {
			ifname = defaultIf
		}
		if id == "" || ifname == "" {
			return nil, fmt.Errorf("invalid --valid entry %q (want ID or ID/IFNAME)", item)
		}
		out = append(out, gcAttachment{ContainerID: id, IfName: ifname})
	}
	return out, nil
}

func cacheDirOf(o *options) string {
	if o.cacheDir != "" {
		return o.cacheDir
	}
	return libcni.CacheDir
}

// cachedAttachment mirrors the fields of libcni's on-disk cache entry
// (kind "cniCacheV1") that a runtime needs to replay a DEL.
type cachedAttachment struct {
	Kind           string                 `json:"kind"`
	ContainerID    string                 `json:"containerId"`
	IfName         string                 `json:"ifName"`
	NetworkName    string                 `json:"networkName"`
	NetNS          string                 `json:"netns,omitempty"`
	CniArgs        [][2]string            `json:"cniArgs,omitempty"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs,omitempty"`
}

func cachedAttachments(cacheDir, network string) ([]cachedAttachment, error) {
	dir := filepath.Join(cacheDir, "results")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var out []cachedAttachment
	for _, e := range entries {
		if e.IsDir() || !strings.HasPrefix(e.Name(), network+"-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var c cachedAttachment
		if json.Unmarshal(b, &c) != nil || c.Kind != libcni.CNICacheV1 {
			continue
		}
		if c.NetworkName != network || c.ContainerID == "" || c.IfName == "" {
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ContainerID != out[j].ContainerID {
			return out[i].ContainerID < out[j].ContainerID
		}
		return out[i].IfName < out[j].IfName
	})
	return out, nil
}

func atLeast110(v string) bool {
	ok, err := version.GreaterThanOrEqualTo(v, "1.1.0")
	return err == nil && ok
}

func invokeArgs(command string, cniPath []string) *invoke.Args {
	return &invoke.Args{
		Command: command,
		Path:    strings.Join(cniPath, string(os.PathListSeparator)),
	}
}

func gcNetworkList(ctx context.Context, cni *libcni.CNIConfig, exec invoke.Exec, cniPath []string,
	cacheDir string, list *libcni.NetworkConfigList, valid []gcAttachment) error {
	var errs []error

	keep := map[gcAttachment]bool{}
	for _, a := range valid {
		keep[a] = true
	}
	cached, err := cachedAttachments(cacheDir, list.Name)
	if err != nil {
		errs = append(errs, fmt.Errorf("reading cached attachments: %w", err))
	}
	for _, c := range cached {
		if keep[gcAttachment{ContainerID: c.ContainerID, IfName: c.IfName}] {
			continue
		}
		rt := &libcni.RuntimeConf{
			ContainerID:    c.ContainerID,
			NetNS:          c.NetNS,
			IfName:         c.IfName,
			Args:           c.CniArgs,
			CapabilityArgs: c.CapabilityArgs,
		}
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("failed to delete stale attachment %s %s: %w", c.ContainerID, c.IfName, err))
		}
	}

	if atLeast110(list.CNIVersion) {
		inject := map[string]interface{}{
			"name":                      list.Name,
			"cniVersion":                list.CNIVersion,
			"cni.dev/valid-attachments": valid,
		}
		for _, p := range list.Plugins {
			conf, err := libcni.InjectConf(p, inject)
			if err != nil {
				errs = append(errs, fmt.Errorf("failed to generate configuration to GC plugin %s: %w", p.Network.Type, err))
				continue
			}
			path, err := exec.FindInPath(p.Network.Type, cniPath)
			if err == nil {
				err = invoke.ExecPluginWithoutResult(ctx, path, conf.Bytes, invokeArgs("GC", cniPath), exec)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("failed to GC plugin %s: %w", p.Network.Type, err))
			}
		}
	}
	return joinErrors(errs)
}

func statusNetworkList(ctx context.Context, exec invoke.Exec, cniPath []string, list *libcni.NetworkConfigList) error {
	if !atLeast110(list.CNIVersion) {
		fmt.Fprintf(os.Stderr, "cni-driver: cniVersion %q < 1.1.0: STATUS not sent (reported as available)\n", list.CNIVersion)
		return nil
	}
	inject := map[string]interface{}{
		"name":       list.Name,
		"cniVersion": list.CNIVersion,
	}
	for _, p := range list.Plugins {
		conf, err := libcni.InjectConf(p, inject)
		if err != nil {
			return fmt.Errorf("failed to generate configuration to get plugin STATUS %s: %w", p.Network.Type, err)
		}
		path, err := exec.FindInPath(p.Network.Type, cniPath)
		if err != nil {
			return err
		}
		// Returned unwrapped so the plugin's error code (50/51) is reported as is.
		if err := invoke.ExecPluginWithoutResult(ctx, path, conf.Bytes, invokeArgs("STATUS", cniPath), exec); err != nil {
			return err
		}
	}
	return nil
}

// multiError keeps every error's text and exposes the first one to errors.As,
// so the first plugin error's code is what gets reported.
type multiError []error

func (m multiError) Error() string {
	parts := make([]string, len(m))
	for i, e := range m {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func (m multiError) Unwrap() error { return m[0] }

func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return multiError(errs)
}
