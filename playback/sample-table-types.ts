/**
 * The shapes of a fragment's sample table (playback/sample-table.ts builds them from
 * moofs, playback/sample-table-codec.ts stores them at segment close). Types only, so
 * the builder and the codec do not import each other.
 */

export interface FragmentRef {
  offset: number;
  size: number;
}

/** One contiguous run of a track's samples in the file. */
export interface SampleRun {
  fileOffset: number;
  count: number;
  bytes: number;
}

export interface TrackFragment {
  trackId: number;
  baseDecodeTime: bigint;
  durations: Uint32Array;
  sizes: Uint32Array;
  flags: Uint32Array;
  compositionOffsets: Int32Array;
  runs: SampleRun[];
  durationTicks: number;
}

export interface FragmentTable {
  /** Where the fragment (moof+mdat) is in the file. */
  offset: number;
  size: number;
  moofSize: number;
  tracks: TrackFragment[];
}
