using System.CommandLine;
using System.CommandLine.Parsing;

namespace Modular.Server.Cli;

/// <summary>
/// The command line's parse errors as an operator reads them. System.CommandLine reports a value it cannot
/// convert as "as expected type 'System.Int32'"; this says "--usage-limit: expected an integer, got 'abc'",
/// for every option and argument of every command, from the symbol's value type alone.
/// </summary>
internal static class UsageErrors
{
    public static string Describe(ParseError error)
    {
        var (name, valueType, tokens) = error.SymbolResult switch
        {
            OptionResult o => (o.Option.Name, o.Option.ValueType, o.Tokens),
            ArgumentResult { Parent: OptionResult o } a => (o.Option.Name, o.Option.ValueType, a.Tokens),
            ArgumentResult a => ($"<{a.Argument.Name}>", a.Argument.ValueType, a.Tokens),
            _ => (null, null, null),
        };
        if (name is null || valueType is null || tokens is not { Count: > 0 } || !IsConversionError(error.Message, valueType))
        {
            return error.Message;
        }

        return $"{name}: expected {Expectation(valueType)}, got '{string.Join(' ', tokens.Select(t => t.Value))}'";
    }

    /// <summary>What a value of <paramref name="type"/> looks like, in words.</summary>
    internal static string Expectation(Type type)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        if (type.IsArray)
        {
            return Expectation(type.GetElementType()!) + " (repeatable)";
        }

        if (type.IsEnum)
        {
            return "one of " + string.Join(", ", Enum.GetNames(type).Select(n => n.ToLowerInvariant()));
        }

        return Type.GetTypeCode(type) switch
        {
            TypeCode.Byte or TypeCode.SByte or TypeCode.Int16 or TypeCode.UInt16 or TypeCode.Int32 or TypeCode.UInt32 or TypeCode.Int64 or TypeCode.UInt64 => "an integer",
            TypeCode.Single or TypeCode.Double or TypeCode.Decimal => "a number",
            TypeCode.Boolean => "true or false",
            _ => "a " + type.Name,
        };
    }

    // System.CommandLine names the CLR type only in its conversion errors ("... as expected type 'System.Int32'").
    private static bool IsConversionError(string message, Type valueType)
    {
        var type = Nullable.GetUnderlyingType(valueType) ?? valueType;
        type = type.IsArray ? type.GetElementType()! : type;
        return type != typeof(string) && message.Contains(type.FullName ?? type.Name, StringComparison.Ordinal);
    }
}
