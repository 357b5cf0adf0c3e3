/**
 * Command-line side of the data folder (`app/data_folder.ts`): tells the user what was created.
 *
 * @module
 */

import type { DataFolderEvent } from "../app/data_folder.ts";

/** Prints a data-folder event on stderr (paths and key ids only, never key bytes). */
export function printDataFolderEvent(e: DataFolderEvent): void {
  switch (e.kind) {
    case "folder-created":
      console.error(`created data folder ${e.dir}`);
      break;
    case "keystore-created":
      console.error(
        `created keystore ${e.keystore} (mode 0600, outside the data folder); back it up separately from ` +
          "the data: without it nothing in the folder can be decrypted",
      );
      break;
    case "master-keys-created":
      console.error(`created master keys ${e.masterKeyIds.join(", ")} (random, 256-bit) in ${e.where}`);
      break;
    case "folder-adopted":
      console.error(`adopted data folder ${e.dir} (record written)`);
      break;
  }
}
