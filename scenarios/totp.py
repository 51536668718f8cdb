"""Prints RFC 6238 codes for a base32 seed file, one per OFFSET (seconds from one shared
"now", so consecutive offsets give consecutive codes). Standard library only."""
import base64, hashlib, hmac, struct, sys, time

seed_text = open(sys.argv[1]).read().strip()
offsets = [int(a) for a in sys.argv[2:]] or [0]
seed = base64.b32decode(seed_text + "=" * (-len(seed_text) % 8))
now = int(time.time())
for offset in offsets:
    counter = (now + offset) // 30
    digest = hmac.new(seed, struct.pack(">Q", counter), hashlib.sha1).digest()
    o = digest[-1] & 15
    print("%06d" % ((struct.unpack(">I", digest[o:o + 4])[0] & 0x7FFFFFFF) % 1000000))
