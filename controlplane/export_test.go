package controlplane

import "time"

// SetImportTiming shortens how often image imports beat and are looked for.
func SetImportTiming(beat, scan time.Duration) (restore func()) {
	b, s := importBeat, importScan
	importBeat, importScan = beat, scan
	return func() { importBeat, importScan = b, s }
}
