using System.Runtime.InteropServices;

namespace Modular.Agent.Daemon;

/// <summary>The one file-system query .NET lacks: the type of a file (socket or not).</summary>
internal static class NativeMethods
{
    public const int SocketFileType = 0xC000;

    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxType = 0x1;
    private const int FileTypeMask = 0xF000;

    // struct statx has the same layout on every Linux architecture (unlike struct stat):
    // stx_mode is a u16 at offset 28. 256 bytes is its full size.
    private const int StatxSize = 256;
    private const int StatxModeOffset = 28;

    /// <summary>The S_IFMT bits of <paramref name="path"/> (not following a symlink), or -1 when it does not exist.</summary>
    public static int FileTypeOf(string path)
    {
        var buffer = new byte[StatxSize];
        if (Statx(AtFdCwd, path, AtSymlinkNoFollow, StatxType, buffer) != 0)
        {
            return -1;
        }

        return BitConverter.ToUInt16(buffer, StatxModeOffset) & FileTypeMask;
    }

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, [Out] byte[] buffer);
}
