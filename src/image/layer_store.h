// Applied layers kept by diff_id, shared by the versions built from them.
//
//   DIR/sha256-HEX[-uBASE-SIZE]/tree/  the layer's files, as ExtractLayer leaves them
//                                      (owners mapped for a user namespace: -u...)
//   DIR/sha256-HEX.../meta             what it removes from the layers below
//   DIR/sha256-HEX.../refs/INO         one per version directory built from it, named
//                                      by that directory's inode number
//   DIR/.new-*                         a layer being extracted
//   DIR/.old-*                         a layer no version uses, being removed
//
// A version's tree shares every file's inode with its layers (MergeLayer): a layer is
// never written once stored, and goes when the last version directory naming it does.
// Thread-safe: imports on several workers may use, add and collect layers at once.
#pragma once

#include <sys/types.h>

#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "image/layer.h"

namespace faas::image {

class LayerStore {
 public:
  explicit LayerStore(std::string dir) : dir_(std::move(dir)) {}

  // Creates DIR (root's alone) and removes what a dead faasd left being added or removed.
  Status Open();

  // The name of the layer with `diff_id` ("sha256:<hex>") written with owners mapped by `ids`.
  static Result<std::string> Key(const std::string& diff_id, const IdMapping& ids);
  // The layer's directory.
  std::string Path(const std::string& key) const { return dir_ + "/" + key; }

  // Takes a reference on layer `key` for the version directory whose inode is `holder`,
  // if the store has the layer. Returns whether it has.
  Result<bool> Use(const std::string& key, ino_t holder);
  // Drops the reference `holder` took on `key` (nothing if there is none).
  void Release(const std::string& key, ino_t holder);
  // An empty directory to extract a new layer into (the caller removes it on failure).
  Result<std::string> NewLayerDir();
  // Makes the layer extracted at `path` (from NewLayerDir) the store's layer `key`, with
  // a reference for `holder`. Should another import have added `key` meanwhile, that
  // one is used and `path` is removed.
  Status Add(const std::string& path, const std::string& key, ino_t holder);

  // Removes every layer that no version directory uses any more: `live` returns the
  // inode numbers of the version directories that exist (called with the store locked,
  // so that no import takes a reference in between). References of other inodes are
  // dropped. Returns what could not be removed, each naming its path.
  std::vector<Error> Collect(const std::function<std::set<ino_t>()>& live);

  // The version directory `path`'s inode, which names its references.
  static Result<ino_t> HolderOf(const std::string& path);

 private:
  Status AddReference(const std::string& layer_dir, ino_t holder) const;

  std::string dir_;
  std::mutex mu_;
  uint64_t next_ = 0;
};

}  // namespace faas::image
