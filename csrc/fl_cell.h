/* The cell math the time loop calls (fl_cell.c). */
#ifndef FL_CELL_H
#define FL_CELL_H

#include "fastlstm.h"

static inline float clampf(float v, float lim)
{
    return v > lim ? lim : (v < -lim ? -lim : v);
}

/* The cell update for one row and hidden units [j0, j1), any cell options:
 *   pre : (4H) recurrent term R.h on entry; used as scratch, gates i, f, g, o
 *   gx  : (4H) input term W.x
 *   c   : (H)  cell state, updated in place
 *   h   : (H)  new hidden state before any projection
 */
void fl_cell_rows(const fl_cell *p, const float *gx, float *pre, float *c, float *h, int j0,
                  int j1);

#endif
