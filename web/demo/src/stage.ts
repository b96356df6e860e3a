/**
 * The stage: comments fly right to left in lanes, never overlapping. Every comment moves at the
 * same speed (px/s), so one that enters a lane behind another can never catch it up; a lane is
 * free again once the last comment's tail has entered plus a gap. The motion is a Web Animations
 * API animation with its duration given up front (a CSS animation whose duration was set after
 * the element was inserted finished at once and removed the comment in the frame it appeared).
 */

const CROSS_SECONDS = 8; // time for a comment to cross the stage's width
const GAP_PX = 32; // space between two comments in a lane
const MAX_WAIT_MS = 3000; // a comment that would wait longer for a lane is dropped
const MAX_ON_STAGE = 300;

export class Stage {
  private lanes: number[] = []; // per lane: performance.now() when it takes a new comment

  constructor(private readonly root: HTMLElement) {}

  private laneHeight(): number {
    return parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--lane')) || 34;
  }

  /** Flies `text`; returns false when every lane is busy for too long (the comment is dropped). */
  fly(text: string, color: string | undefined, mine: boolean): boolean {
    const lane = this.laneHeight();
    const count = Math.max(1, Math.floor((this.root.clientHeight - 8) / lane));
    if (this.lanes.length !== count) this.lanes = Array.from({ length: count }, (_, i) => this.lanes[i] ?? 0);
    if (this.root.querySelectorAll('.bullet').length >= MAX_ON_STAGE) return false;
    const now = performance.now();
    let best = this.lanes.findIndex((free) => free <= now);
    if (best < 0) best = this.lanes.indexOf(Math.min(...this.lanes));
    const wait = Math.max(0, this.lanes[best]! - now);
    if (wait > MAX_WAIT_MS) return false;

    const el = document.createElement('div');
    el.className = mine ? 'bullet mine' : 'bullet';
    el.textContent = text;
    if (color) el.style.color = color;
    el.style.top = `${4 + best * lane}px`;
    el.style.transform = `translateX(${this.root.clientWidth}px)`;
    this.root.appendChild(el);
    const width = el.offsetWidth;
    const stageWidth = this.root.clientWidth;
    const speed = stageWidth / CROSS_SECONDS; // px/s
    const distance = stageWidth + width;
    this.lanes[best] = now + wait + ((width + GAP_PX) / speed) * 1000;
    const animation = el.animate(
      [{ transform: `translateX(${stageWidth}px)` }, { transform: `translateX(${-width}px)` }],
      { duration: (distance / speed) * 1000, delay: wait, easing: 'linear', fill: 'both' },
    );
    animation.onfinish = () => el.remove();
    animation.oncancel = () => el.remove();
    return true;
  }
}
