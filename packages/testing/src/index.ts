export const packageName = '@workbay/testing';
