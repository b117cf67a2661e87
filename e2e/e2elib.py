"""What the end-to-end Python scripts share."""
import sys
import time


def wait(what, cond, deadline):
    """Waits until cond() returns (True, _), up to deadline seconds; else
    exits with cond's detail."""
    start = time.time()
    while True:
        ok, detail = cond()
        if ok:
            print("ok   %s (%.1fs)" % (what, time.time() - start))
            return
        if time.time() - start > deadline:
            sys.exit("FAIL %s: not within %ss: %s" % (what, deadline, detail))
        time.sleep(0.3)
