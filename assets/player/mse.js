// Feeds fragmented MP4 to a <video> through Media Source Extensions, keeping latency low: appends
// are queued one at a time (a SourceBuffer takes one append at a time); when playback falls more
// than `maxLatency` seconds behind the newest frame it jumps to the live edge, when less far
// behind it plays faster to catch up without a jump; and what has been played is removed so
// the buffer never grows (a tab left open for days holds `keepSeconds` of video).

export class MsePlayer {
  constructor(video, { maxLatency = 1.0, keepSeconds = 10 } = {}) {
    this.video = video;
    this.maxLatency = maxLatency;
    this.keepSeconds = keepSeconds;
    this.queue = [];
    this.sourceBuffer = null;
    this.jumps = 0;
    this.onError = () => {};
  }

  static supports(codec) {
    return typeof MediaSource !== 'undefined' && MediaSource.isTypeSupported(`video/mp4; codecs="${codec}"`);
  }

  // Creates the MediaSource and its SourceBuffer for `codec` (e.g. "avc1.42c01e").
  start(codec) {
    return new Promise((resolve, reject) => {
      const ms = new MediaSource();
      this.mediaSource = ms;
      this.video.src = URL.createObjectURL(ms);
      ms.addEventListener('sourceopen', () => {
        try {
          URL.revokeObjectURL(this.video.src);
          const sb = ms.addSourceBuffer(`video/mp4; codecs="${codec}"`);
          sb.mode = 'segments';
          sb.addEventListener('updateend', () => this.pump());
          sb.addEventListener('error', () => this.onError(new Error('SourceBuffer error')));
          this.sourceBuffer = sb;
          // Live: no known end; seekable spans what is buffered.
          ms.duration = Infinity;
          resolve();
          this.pump();
        } catch (e) {
          reject(e);
        }
      }, { once: true });
    });
  }

  append(bytes) {
    this.queue.push(bytes);
    this.pump();
  }

  pump() {
    const sb = this.sourceBuffer;
    if (!sb || sb.updating || this.mediaSource.readyState !== 'open') return;
    const buffered = sb.buffered;
    const now = this.video.currentTime;
    if (buffered.length) {
      const start = buffered.start(0);
      const end = buffered.end(buffered.length - 1);
      this.chase(start, end);
      if (now - start > this.keepSeconds * 1.5) {
        sb.remove(0, now - this.keepSeconds);
        return;
      }
    }
    const next = this.queue.shift();
    if (!next) return;
    try {
      sb.appendBuffer(next);
    } catch (e) {
      if (e.name === 'QuotaExceededError' && buffered.length) {
        // Full even after trimming: drop what is queued and remove all but the last second.
        this.queue = [];
        sb.remove(0, Math.max(0, buffered.end(buffered.length - 1) - 1));
      } else {
        this.onError(e);
      }
    }
  }

  // Keeps currentTime near the newest buffered frame: a jump when more than maxLatency behind,
  // else faster until within a tenth of it (0.1 s by default, a few frames). A viewer joining a
  // shared camera starts on its cached group of pictures, up to a keyframe interval old: 25%
  // faster takes most of that back in seconds, 10% the rest without a visible hurry.
  chase(start, end) {
    const v = this.video;
    if (v.currentTime < start) v.currentTime = start; // first frames, or after a gap
    const lag = end - v.currentTime;
    if (lag > this.maxLatency) {
      v.currentTime = Math.max(start, end - 0.1);
      this.jumps++;
    } else {
      v.playbackRate = lag > this.maxLatency / 3 ? 1.25 : lag > this.maxLatency / 10 ? 1.1 : 1.0;
    }
    if (v.paused && v.readyState >= 2) v.play().catch(() => {});
  }

  get latency() {
    const b = this.sourceBuffer && this.sourceBuffer.buffered;
    return b && b.length ? b.end(b.length - 1) - this.video.currentTime : 0;
  }
}
