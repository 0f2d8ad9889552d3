/**
 * The persisted shape of a camera's events and manual flag. The decisions themselves
 * are pure functions over plain data in schedule/recording.ts; this name stays while
 * index/db.ts imports the type from here (the index's owner moves that import).
 */
export type { DirectorState } from '../schedule/recording.ts';
