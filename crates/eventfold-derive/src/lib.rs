//! `#[derive(DomainEvent)]`: implements `eventfold::DomainEvent` for an enum of domain events.
//!
//! ```ignore
//! #[derive(Debug, Clone, DomainEvent)]
//! #[event(prefix = "order.")]
//! enum OrderEvent {
//!     #[event(version = 2)]
//!     Placed(OrderPlaced),               // type "order.placed", schema version 2
//!     #[event(name = "order.cancelled_by_customer")]
//!     Cancelled(OrderCancelled),         // type as given, schema version 1
//!     Shipped,                           // type "order.shipped", data `{}`
//! }
//! ```
//!
//! Each variant is a newtype around a serde type (its data) or a unit variant (no data). The
//! event type is `name` when given, else the enum's `prefix` followed by the variant name in
//! snake_case.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitInt, LitStr, parse_macro_input};

/// Derives `eventfold::DomainEvent`. See the crate documentation.
#[proc_macro_derive(DomainEvent, attributes(event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Variant {
    ident: syn::Ident,
    name: String,
    version: u32,
    newtype: bool,
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let ident = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "DomainEvent cannot be derived for a generic enum: event types are fixed names",
        ));
    }
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            ident,
            "DomainEvent is derived for an enum whose variants are the events",
        ));
    };
    let mut prefix = String::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("prefix") {
                prefix = meta.value()?.parse::<LitStr>()?.value();
                Ok(())
            } else {
                Err(meta
                    .error("unknown `event` attribute on the enum; expected `prefix = \"...\"`"))
            }
        })?;
    }
    let mut variants = Vec::new();
    for v in &data.variants {
        let mut name = None;
        let mut version = 1u32;
        for attr in v.attrs.iter().filter(|a| a.path().is_ident("event")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    name = Some(meta.value()?.parse::<LitStr>()?.value());
                    Ok(())
                } else if meta.path.is_ident("version") {
                    let lit = meta.value()?.parse::<LitInt>()?;
                    version = lit.base10_parse()?;
                    if version == 0 {
                        return Err(syn::Error::new_spanned(lit, "schema versions start at 1"));
                    }
                    Ok(())
                } else {
                    Err(meta.error(
                        "unknown `event` attribute on a variant; expected `name = \"...\"` or `version = N`",
                    ))
                }
            })?;
        }
        let newtype = match &v.fields {
            Fields::Unit => false,
            Fields::Unnamed(f) if f.unnamed.len() == 1 => true,
            _ => {
                return Err(syn::Error::new_spanned(
                    v,
                    "each DomainEvent variant wraps one serde type (`Placed(OrderPlaced)`) or has no data (`Shipped`)",
                ));
            }
        };
        let name = name.unwrap_or_else(|| format!("{prefix}{}", snake_case(&v.ident.to_string())));
        if name.is_empty() || name.starts_with('$') || name.len() > 256 {
            return Err(syn::Error::new_spanned(
                v,
                format!("event type {name:?} is not valid: 1..=256 bytes, not starting with `$`"),
            ));
        }
        if let Some(other) = variants.iter().find(|o: &&Variant| o.name == name) {
            return Err(syn::Error::new_spanned(
                v,
                format!(
                    "event type {name:?} is already used by variant {}",
                    other.ident
                ),
            ));
        }
        variants.push(Variant {
            ident: v.ident.clone(),
            name,
            version,
            newtype,
        });
    }
    let names: Vec<_> = variants
        .iter()
        .map(|v| LitStr::new(&v.name, Span::call_site()))
        .collect();
    let versions: Vec<_> = variants.iter().map(|v| v.version).collect();
    let pats: Vec<_> = variants
        .iter()
        .map(|v| {
            let id = &v.ident;
            if v.newtype {
                quote!(Self::#id(_))
            } else {
                quote!(Self::#id)
            }
        })
        .collect();
    let encode_arms = variants.iter().map(|v| {
        let id = &v.ident;
        if v.newtype {
            quote!(Self::#id(inner) => codec.encode(inner))
        } else {
            quote!(Self::#id => codec.encode(&::eventfold::__private::NoData {}))
        }
    });
    let decode_arms = variants.iter().zip(&names).map(|(v, name)| {
        let id = &v.ident;
        if v.newtype {
            quote!(#name => ::core::result::Result::Ok(Self::#id(codec.decode(event_type, data)?)))
        } else {
            quote!(#name => ::core::result::Result::Ok(Self::#id))
        }
    });
    Ok(quote! {
        impl ::eventfold::DomainEvent for #ident {
            const EVENT_TYPES: &'static [&'static str] = &[#(#names),*];

            fn event_type(&self) -> &'static str {
                match self { #(#pats => #names,)* }
            }

            fn schema_version(&self) -> u32 {
                match self { #(#pats => #versions,)* }
            }

            fn schema_version_of(event_type: &str) -> ::core::option::Option<u32> {
                match event_type {
                    #(#names => ::core::option::Option::Some(#versions),)*
                    _ => ::core::option::Option::None,
                }
            }

            fn encode(&self, codec: ::eventfold::Codec) -> ::core::result::Result<::std::vec::Vec<u8>, ::eventfold::CodecError> {
                match self { #(#encode_arms,)* }
            }

            fn decode(event_type: &str, data: &[u8], codec: ::eventfold::Codec) -> ::core::result::Result<Self, ::eventfold::CodecError> {
                match event_type {
                    #(#decode_arms,)*
                    other => ::core::result::Result::Err(::eventfold::CodecError::UnknownType {
                        event_type: other.to_owned(),
                        rust_type: ::core::stringify!(#ident),
                    }),
                }
            }
        }
    })
}

/// `OrderPlaced` → `order_placed`; `HTTPCall` → `http_call`.
fn snake_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn variant_names_become_snake_case() {
        for (name, want) in [
            ("Placed", "placed"),
            ("OrderPlaced", "order_placed"),
            ("HTTPCall", "http_call"),
            ("PlacedV2", "placed_v2"),
            ("A", "a"),
            ("already_snake", "already_snake"),
        ] {
            assert_eq!(snake_case(name), want, "{name}");
        }
    }
}
