'use strict';
// Guide for the `list` workload: a node fills a page and its first Int32 is the byte offset of the next
// node (-1 at the end). Runs on the pager thread, which hands it each page fetched into the region.
module.exports.guide = function guide(page) {
  const next = page[0] | (page[1] << 8) | (page[2] << 16) | (page[3] << 24);
  return next === -1 ? null : [next >>> 0];
};
